"""Small server-rendered SVG charts: no JavaScript, no CDN, nothing to install.

Each function returns safe markup for inline use; every piece of text is escaped. Charts draw in
a 480-unit-wide viewBox (bar charts 360) and scale to their container. Text sizes are in viewBox
units too, so text shrinks with its chart (a 320px phone draws a 480-unit chart at 0.56 of its
size): charts.css raises the text's size on narrow screens, up to SMALL_MAX (BARS_TEXT_MAX for
bar charts), so that it stays 12 px or more, and the labels here are spaced for that largest size.
Colours are paired with a second cue (dashes, labels) for readers who cannot tell them apart, and
each chart's numbers are also in the data table next to it.
"""
from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 480
BARS_WIDTH = 360
COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626")
# The same colours for text on the white card: at least 4.5:1 (amber and green, 3.2 and 3.8:1 as
# lines, which need only 3:1, are darkened).
TEXT_COLORS = ("#2563eb", "#b45309", "#047857", "#7c3aed", "#dc2626")
DASHES = ("", "6 4", "2 3", "8 3 2 3", "1 2")
SMALL_MAX = 22  # the largest font size charts.css gives `text.small`, in viewBox units (narrowest phones)
ROW = 29  # the height of a line of small text at SMALL_MAX, with a gap
BARS_TEXT_MAX = 17  # the same for the text of bar charts (labels, values), drawn at 360 units
# A line of text fills from 0.93 of its size above its baseline to 0.24 below (DejaVu Sans; a
# browser's box for a <text>): what keeps lines apart at any size is spaced in these.
ASCENT, DESCENT = 0.93, 0.24
# Below the plot, in the text's own size (whichever charts.css gives it): the x labels a line and
# a third down, clear of the y axis's "0"; an axis title one line further, clear of the x labels.
X_LABEL_DY = 1.35
X_TITLE_DY = round(X_LABEL_DY + DESCENT + ASCENT + 0.15, 2)


def _svg(chart_id: str, title: str, description: str, height: float, body: list[str], *,
         width: int = WIDTH, kind: str = "") -> SafeString:
    return mark_safe(
        # Named by its title alone, as a picture is; the figures are its description, read after
        # the name (a screen reader read them all as the name, a paragraph of numbers).
        f'<svg viewBox="0 0 {width} {height:.0f}" role="img" aria-labelledby="{chart_id}-t" '
        f'aria-describedby="{chart_id}-d" '
        f'class="chart-svg {kind}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(description)}</desc>'
        + "".join(body) + "</svg>"
    )


def _width(text: str, size: float = SMALL_MAX, *, bold: bool = False) -> float:
    """About how wide `text` draws at `size`: a generous guess, made for DejaVu Sans, a wide font
    (its bold a tenth wider)."""
    return (1.1 if bold else 1) * size * sum(0.36 if c in " .,:;'!|()-/ijlrtf" else 0.95 if c in "%mwMW@" else
                                             0.78 if c.isupper() else 0.64 for c in text)


def _every(labels: list[str], step: float) -> int:
    """Label every n-th of `labels`, drawn `step` apart, so that none runs into the next."""
    if step <= 0:
        return len(labels)
    return max(1, math.ceil((max(_width(label) for label in labels) + 12) / step))


def _fit(text: str, room: float, size: float) -> str:
    """`text`, shortened with an ellipsis where it would draw wider than `room` at `size`."""
    while len(text) > 1 and _width(text, size) > room:
        text = text[:-2].rstrip() + "…"
    return text


def empty(chart_id: str, title: str) -> SafeString:
    return _svg(chart_id, title, "No data in this range", 60, [
        f'<text x="{WIDTH / 2}" y="35" text-anchor="middle" class="muted note">No data in this range</text>'])


def bars(chart_id: str, title: str, labels: list[str], values: list[float], fmt=str) -> SafeString:
    """Horizontal bars with the label above each bar, so that long labels fit a phone's width (those
    still too long are shortened; the full label is its tooltip and in the data table)."""
    if not labels or not any(values):
        return empty(chart_id, title)
    # Narrower than the other charts: on a phone bar charts scale down less, so their text stays large.
    top, width, size = 4, BARS_WIDTH, BARS_TEXT_MAX
    # A row: the label's line, then the value's line with the bar beside it, then a gap.
    label_y = round(size * ASCENT)
    value_y = label_y + round(size * (DESCENT + ASCENT)) + 1
    bar_h = 14
    bar_y = value_y - round(size * 0.36) - bar_h / 2  # centred on the value's digits
    row_h = value_y + round(size * DESCENT) + 4
    top_value = max(values) or 1
    plot_w = width - 6 - max(_width(fmt(value), size, bold=True) for value in values)  # values: class="value"
    body = []
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row_h
        w = max(plot_w * value / top_value, 1 if value else 0)
        body.append(
            f'<text x="0" y="{y + label_y}">{escape(_fit(label, width, size))}<title>{escape(label)}</title></text>'
            f'<rect x="0" y="{y + bar_y:.0f}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[0]}" rx="2"/>'
            f'<text x="{w + 6:.1f}" y="{y + value_y}" class="value">{escape(fmt(value))}</text>')
    description = "; ".join(f"{label}: {fmt(value)}" for label, value in zip(labels, values))
    return _svg(chart_id, title, description, top * 2 + row_h * len(labels), body, width=width, kind="bars")


def columns(chart_id: str, title: str, labels: list[str], values: list[float], *,
            markers: list[tuple[float, str]] = (), x_title: str = "", y_title: str = "") -> SafeString:
    """Vertical bars (a histogram), with optional vertical marker lines at fractional bin positions."""
    if not labels or not any(values):
        return empty(chart_id, title)
    top_value = max(values) or 1
    ticks = _y_ticks(top_value, str)
    # Room for the y labels on the left, and a line for each marker's label above the plot.
    left, top = _y_labels_width(ticks), ROW * (len(markers) + 0.5)
    # Room on the right for half the last label, centred under its column, to stay on the chart.
    count, half = len(labels), _width(labels[-1]) / 2 + 2
    right = max(10.0, (half - (WIDTH - left) / (2 * count)) / (1 - 1 / (2 * count)))
    plot_w, plot_h = WIDTH - left - right, 144
    bottom = top + plot_h
    height = bottom + SMALL_MAX * (X_TITLE_DY + DESCENT if x_title else X_LABEL_DY + DESCENT) + 6
    slot = plot_w / len(labels)
    every = _every(labels, slot)
    body = _y_axis(left, top, plot_w, plot_h, ticks)
    for i, (label, value) in enumerate(zip(labels, values)):
        h = plot_h * value / top_value
        x = left + i * slot
        body.append(f'<rect x="{x + slot * 0.12:.1f}" y="{bottom - h:.1f}" width="{slot * 0.76:.1f}" '
                    f'height="{h:.1f}" fill="{COLORS[0]}"><title>{escape(label)}: {escape(str(value))}</title></rect>')
        if i % every == 0:
            body.append(_x_label(x + slot / 2, bottom, label))
    for n, (position, text) in enumerate(markers):
        x = left + position * slot
        shade = 4 if n == 0 else 1
        # The label goes right of its line, or left of it where it would run off the chart.
        at_end = x + 4 + _width(text) > WIDTH
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{ROW * (n + 0.5):.1f}" y2="{bottom}" '
                    f'stroke="{COLORS[shade]}" stroke-width="2" stroke-dasharray="{DASHES[n + 1]}"/>'
                    f'<text x="{x - 4 if at_end else x + 4:.1f}" y="{ROW * (n + 0.5):.1f}" dy="0.35em" class="small" '
                    f'fill="{TEXT_COLORS[shade]}" text-anchor="{"end" if at_end else "start"}">{escape(text)}</text>')
    if x_title:
        body.append(f'<text x="{left + plot_w / 2:.1f}" y="{bottom}" dy="{X_TITLE_DY}em" text-anchor="middle" '
                    f'class="small">{escape(x_title)}</text>')
    description = "; ".join(f"{label}: {value}" for label, value in zip(labels, values))
    if markers:
        description += ". Lines: " + "; ".join(text for _, text in markers)
    return _svg(chart_id, title, description, height, body)


def lines(chart_id: str, title: str, x_labels: list[str], series: list[tuple[str, list[float | None]]], *,
          y_max: float | None = None, fmt=str) -> SafeString:
    """Time series: one line per series (None = no data in that period, the line breaks)."""
    values = [v for _, vs in series for v in vs if v is not None]
    if not x_labels or not values:
        return empty(chart_id, title)
    top_value = y_max or max(values) or 1
    ticks = _y_ticks(top_value, fmt)
    # The first and last points sit half an x label in from the plot's edges, so their labels
    # clear the y labels and the chart's edge.
    inset = max(_width(label) for label in x_labels) / 2 + 4
    left, top = _y_labels_width(ticks), ROW / 2
    plot_w, plot_h = WIDTH - left - 4, 164
    bottom = top + plot_h
    step = (plot_w - 2 * inset) / max(len(x_labels) - 1, 1)
    every = _every(x_labels, step)
    # The legend: two entries a line when they fit side by side, else one.
    per_line = 2 if all(30 + _width(name) <= WIDTH / 2 for name, _ in series) else 1
    legend_top = bottom + SMALL_MAX * (X_LABEL_DY + DESCENT) + 4
    height = legend_top + ROW * math.ceil(len(series) / per_line) + 4
    body = _y_axis(left, top, plot_w, plot_h, ticks)
    for i, label in enumerate(x_labels):
        if i % every == 0:
            body.append(_x_label(left + inset + i * step, bottom, label))
    for n, (name, vs) in enumerate(series):
        color, dash = COLORS[n % len(COLORS)], DASHES[n % len(DASHES)]
        path, pen_down = [], False
        for i, v in enumerate(vs):
            if v is None:
                pen_down = False
                continue
            x, y = left + inset + i * step, bottom - plot_h * v / top_value
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>{escape(name)} '
                        f'{escape(x_labels[i])}: {escape(fmt(v))}</title></circle>')
        if path:
            body.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2" '
                        f'stroke-dasharray="{dash}"/>')
        lx = (n % per_line) * WIDTH / 2
        ly = legend_top + ROW * (n // per_line + 0.5)
        body.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2" '
                    f'stroke-dasharray="{dash}"/><text x="{lx + 27}" y="{ly}" dy="0.35em" class="small">'
                    f'{escape(name)}</text>')
    description = "; ".join(
        f"{name}: " + ", ".join(f"{x} {fmt(v)}" for x, v in zip(x_labels, vs) if v is not None) for name, vs in series)
    return _svg(chart_id, title, _at_most(description, 2000), height, body)


def _at_most(description: str, limit: int) -> str:
    """`description` cut after its last whole figure that fits in `limit` characters, saying where
    the rest is (a year day by day would be read out for minutes, and was cut mid-number)."""
    if len(description) <= limit:
        return description
    rest = "… and more: every figure is in the data table under the chart."
    cut = description[: limit - len(rest)]
    return cut[: max(cut.rfind(", "), cut.rfind("; "), 0)] + rest


def _y_ticks(top_value: float, fmt) -> list[tuple[float, str]]:
    return [(fraction, fmt(_round(top_value * fraction))) for fraction in (0, 0.5, 1)]


def _y_labels_width(ticks: list[tuple[float, str]]) -> float:
    """The plot's left edge: right of the widest y label."""
    return max(40, max(_width(text) for _, text in ticks) + 8)


def _y_axis(left: float, top: float, plot_w: float, plot_h: float, ticks: list[tuple[float, str]]) -> list[str]:
    body = []
    for fraction, text in ticks:
        y = top + plot_h - plot_h * fraction
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                    f'<text x="{left - 6}" y="{y:.1f}" dy="0.35em" text-anchor="end" class="small">{escape(text)}</text>')
    return body



def _x_label(x: float, bottom: float, label: str) -> str:
    return (f'<text x="{x:.1f}" y="{bottom}" dy="{X_LABEL_DY}em" text-anchor="middle" class="small">'
            f'{escape(label)}</text>')


def _round(value: float) -> float:
    return int(value) if float(value).is_integer() or value >= 10 else round(value, 2)
