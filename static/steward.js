// Every page: keep the keyboard focus through HTMX swaps.
//
// A swap that replaces the element holding the focus (counts refreshing themselves, a task's or a
// bulk retry's progress every 2 s, the row whose Approve or Retry button was just pressed) drops
// the focus to <body>: the next Tab starts again at the top of the page, and a screen reader says
// nothing. htmx itself only restores an element that has an id. So, after such a swap, the focus
// goes back to the same control in the new content (the same link, the same button); when that
// control is gone (the Approve button of a decided row), to the message the answer carries, which a
// screen reader then reads; failing that, to the new content itself.
(function () {
  "use strict";

  var FOCUSABLE = "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]";
  var lost = null;

  // What identifies a control across a refresh: a link by where it goes (its text may be a count
  // that changed), anything else by its name and its words.
  function key(el) {
    if (el.tagName === "A") return "A " + el.getAttribute("href");
    return [el.tagName, el.getAttribute("name") || "", el.getAttribute("type") || "",
            el.tagName === "BUTTON" || el.tagName === "SUMMARY" ? el.textContent.trim() : ""].join(" ");
  }
  function same(scope, wanted) {
    return Array.prototype.filter.call(scope.querySelectorAll(FOCUSABLE), function (el) {
      return key(el) === wanted;
    });
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var active = document.activeElement;
    var target = event.detail.target;
    lost = null;
    if (!active || active === document.body || !target || !target.contains(active)) return;
    var wanted = active === target ? null : key(active);
    lost = { scope: target.id, key: wanted, nth: wanted ? same(target, wanted).indexOf(active) : 0 };
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    if (!lost) return;
    var was = lost;
    lost = null;
    if (document.activeElement && document.activeElement !== document.body) return;  // htmx kept it (by id)
    var scope = (was.scope && document.getElementById(was.scope)) || event.target;
    if (!scope || !scope.querySelectorAll) return;
    var matches = was.key ? same(scope, was.key) : [scope];
    var next = matches[Math.max(0, Math.min(was.nth, matches.length - 1))] || scope.querySelector(".msg") || scope;
    if (!next.matches(FOCUSABLE)) next.setAttribute("tabindex", "-1");
    next.focus({ preventScroll: true });
  });

  // What a page changes by itself (a task's status, the inbox's pending count, a bulk retry
  // pausing) is said through the one live region that stays on the page (#announcer, base.html):
  // HTMX swaps in whole regions, and a live region that arrives with its text is not read out.
  // An element marked data-announce="<label>" is watched: when a swap changes its text, the
  // announcer says "<label>: <text>".
  var said = {};
  function watch(root, speak) {
    if (!root.querySelectorAll) return;
    var marked = Array.prototype.slice.call(root.querySelectorAll("[data-announce]"));
    if (root.matches("[data-announce]")) marked.unshift(root);
    var news = [];
    marked.forEach(function (el) {
      var label = el.getAttribute("data-announce");
      var text = el.textContent.replace(/\s+/g, " ").trim();
      if (speak && said[label] !== text) news.push(label + ": " + text);
      said[label] = text;
    });
    var box = document.getElementById("announcer");
    if (box && news.length) box.textContent = news.join(". ");
  }
  document.addEventListener("DOMContentLoaded", function () { watch(document.body, false); });
  document.addEventListener("htmx:afterSettle", function (event) { watch(event.target, true); });

  // A box that can scroll (a wide table, a step's output, a traceback) is a named region with
  // tabindex="0" in the HTML, so that a keyboard user can reach and scroll it (Safari and Firefox do
  // not let Tab into a scroller holding nothing focusable). Most of them do not overflow at all on a
  // wide screen, or while their <details> is closed, and each would still be a Tab stop: a task's
  // page would take a dozen presses to cross. So only a box that overflows now stays in the Tab
  // order; the others keep their role and name (screen readers still list them) with tabindex -1.
  // Checked again when the window's size changes, a <details> opens or closes, or HTMX swaps content.
  var SCROLLERS = "[role=region][tabindex]";
  function tabStops(root) {
    var boxes = Array.prototype.slice.call(root.querySelectorAll ? root.querySelectorAll(SCROLLERS) : []);
    if (root.matches && root.matches(SCROLLERS)) boxes.unshift(root);
    boxes.forEach(function (box) {
      // Inside a closed <details> nothing shows, though Chromium still lays the box out.
      var overflows = !box.closest("details:not([open])")
        && (box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1);
      box.setAttribute("tabindex", overflows ? "0" : "-1");
    });
  }
  var pending = false;
  function allTabStops() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; tabStops(document.body); });
  }
  document.addEventListener("DOMContentLoaded", function () { tabStops(document.body); });
  window.addEventListener("load", allTabStops);  // images and fonts can change what overflows
  window.addEventListener("resize", allTabStops);
  document.addEventListener("toggle", function (event) { tabStops(event.target); }, true);  // <details>
  document.addEventListener("htmx:afterSettle", function (event) { tabStops(event.target); });

  // A form marked data-reset-on-success empties itself once HTMX has sent it successfully (the
  // upload form, ready for the next documents). Here rather than in an hx-on attribute: htmx runs
  // those through eval, which the Content-Security-Policy refuses.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (event.detail.successful && form.matches && form.matches("form[data-reset-on-success]")) form.reset();
  });
})();
