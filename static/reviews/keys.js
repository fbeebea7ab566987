// Keyboard shortcuts of the review inbox and item pages (the "?" key lists them).
// No key decides by itself: "a" moves the focus to an Approve button, and Enter presses it.
(function () {
  "use strict";

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  function rows() { return Array.from(document.querySelectorAll("#inbox-rows tr.inbox-row")); }
  function selected() { return document.querySelector("#inbox-rows tr.inbox-row.selected"); }

  function mark(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); });
    if (row) row.classList.add("selected");
  }
  function select(row) {
    mark(row);
    if (!row) return;
    row.scrollIntoView({ block: "nearest" });
    var link = row.querySelector("a.open");
    if (link) link.focus({ preventScroll: true });
  }
  function move(step) {
    var all = rows();
    if (!all.length) return;
    var i = all.indexOf(selected());
    select(all[i < 0 ? 0 : Math.min(all.length - 1, Math.max(0, i + step))]);
  }
  function follow(id) {
    var link = document.getElementById(id);
    if (link) window.location.href = link.href;
  }
  function focus(el) {
    if (!el) return;
    el.focus();
    el.scrollIntoView({ block: "center" });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    // While the help is open (a modal dialog) the page behind it stays put: only "?" (and the
    // dialog's own Escape) act.
    var help = document.getElementById("keys-help");
    if (help && help.open && event.key !== "?") return;
    var inbox = !!document.getElementById("inbox-rows");
    var row = selected();
    var handled = true;
    switch (event.key) {
      case "?":
        if (help) { if (help.open) help.close(); else help.showModal(); }
        break;
      case "j": if (inbox) move(1); else follow("next-item"); break;
      case "k": if (inbox) move(-1); else follow("previous-item"); break;
      case "o": if (inbox && row) window.location.href = row.dataset.href; else handled = false; break;
      case "a":
        focus(inbox ? row && row.querySelector("button.approve") : document.getElementById("approve-button"));
        break;
      case "r":
        if (!inbox) focus(document.getElementById("reject-reason"));
        else if (row) window.location.href = row.dataset.href + "#reject";
        break;
      case "e":
        var field = !inbox && document.querySelector(".correct");
        if (field) { focus(field); field.select(); } else handled = false;
        break;
      case "u": if (!inbox) follow("back-to-inbox"); else handled = false; break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });

  // A decided row comes back from the server without the selection, while the focus stays in it
  // (steward.js): it is still the selected one, so j and k go on from there, not from the top.
  document.addEventListener("htmx:afterSettle", function (event) {
    var row = event.target;
    if (row.matches && row.matches("tr.inbox-row") && row.contains(document.activeElement)) mark(row);
  });

  document.addEventListener("click", function (event) {
    var row = event.target.closest && event.target.closest("tr.inbox-row");
    if (row && !event.target.closest("a, button, form")) select(row);
  });
})();
