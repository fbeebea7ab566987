"""Small server-rendered SVG charts: no JavaScript, no CDN, nothing to install.

Each function returns safe markup for inline use; every piece of text is escaped. Charts draw in
a 480-unit-wide viewBox and scale to their container, so they stay readable on a phone. Colours
are paired with a second cue (dashes, labels) for readers who cannot tell them apart, and each
chart's numbers are also in the data table next to it.
"""
from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 480
BARS_WIDTH = 360
COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626")
DASHES = ("", "6 4", "2 3", "8 3 2 3", "1 2")


def _svg(chart_id: str, title: str, description: str, height: float, body: list[str], *,
         width: int = WIDTH, kind: str = "") -> SafeString:
    return mark_safe(
        f'<svg viewBox="0 0 {width} {height:.0f}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'class="chart-svg {kind}" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(description)}</desc>'
        + "".join(body) + "</svg>"
    )


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def empty(chart_id: str, title: str) -> SafeString:
    return _svg(chart_id, title, "No data in this range", 60, [
        f'<text x="{WIDTH / 2}" y="35" text-anchor="middle" class="muted">No data in this range</text>'])


def bars(chart_id: str, title: str, labels: list[str], values: list[float], fmt=str) -> SafeString:
    """Horizontal bars with the label above each bar: long labels fit a phone's width unshortened."""
    if not labels or not any(values):
        return empty(chart_id, title)
    # Narrower than the other charts: on a phone bar charts scale down less, so their text stays large.
    row_h, top, width = 40, 4, BARS_WIDTH
    top_value = max(values) or 1
    plot_w = width - 90
    body = []
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row_h
        w = max(plot_w * value / top_value, 1 if value else 0)
        body.append(
            f'<text x="0" y="{y + 14}">{escape(_short(label, 42))}<title>{escape(label)}</title></text>'
            f'<rect x="0" y="{y + 20}" width="{w:.1f}" height="14" fill="{COLORS[0]}" rx="2"/>'
            f'<text x="{w + 6:.1f}" y="{y + 32}" class="value">{escape(fmt(value))}</text>')
    description = "; ".join(f"{label}: {fmt(value)}" for label, value in zip(labels, values))
    return _svg(chart_id, title, description, top * 2 + row_h * len(labels), body, width=width, kind="bars")


def columns(chart_id: str, title: str, labels: list[str], values: list[float], *,
            markers: list[tuple[float, str]] = (), x_title: str = "", y_title: str = "") -> SafeString:
    """Vertical bars (a histogram), with optional vertical marker lines at fractional bin positions."""
    if not labels or not any(values):
        return empty(chart_id, title)
    left, right, top, bottom = 40, 10, 34, 42
    height = 220
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    top_value = max(values) or 1
    slot = plot_w / len(labels)
    body = _y_axis(left, top, plot_w, plot_h, top_value, str)
    for i, (label, value) in enumerate(zip(labels, values)):
        h = plot_h * value / top_value
        x = left + i * slot
        body.append(f'<rect x="{x + slot * 0.12:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.76:.1f}" '
                    f'height="{h:.1f}" fill="{COLORS[0]}"><title>{escape(label)}: {escape(str(value))}</title></rect>')
        if len(labels) <= 12 or i % 2 == 0:
            body.append(f'<text x="{x + slot / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                        f'class="small">{escape(label)}</text>')
    for n, (position, text) in enumerate(markers):
        x = left + position * slot
        color = COLORS[4 if n == 0 else 1]
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + plot_h}" stroke="{color}" '
                    f'stroke-width="2" stroke-dasharray="{DASHES[n + 1]}"/>'
                    f'<text x="{min(x + 4, WIDTH - 4):.1f}" y="{top - 8 + n * 12}" class="small" fill="{color}" '
                    f'text-anchor="{"end" if x > WIDTH * 0.6 else "start"}">{escape(text)}</text>')
    if x_title:
        body.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" class="small">'
                    f'{escape(x_title)}</text>')
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
    left, right, top, bottom = 40, 10, 10, 56
    height = 230
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    top_value = y_max or max(values) or 1
    step = plot_w / max(len(x_labels) - 1, 1)
    body = _y_axis(left, top, plot_w, plot_h, top_value, fmt)
    # As many axis labels as fit without overlapping (about 6.5 units per character at 11px).
    fitting = max(2, int(plot_w // (max(len(label) for label in x_labels) * 6.5 + 14)))
    every = max(1, -(-len(x_labels) // fitting))
    for i, label in enumerate(x_labels):
        if i % every == 0:
            body.append(f'<text x="{left + i * step:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                        f'class="small">{escape(label)}</text>')
    for n, (name, vs) in enumerate(series):
        color, dash = COLORS[n % len(COLORS)], DASHES[n % len(DASHES)]
        path, pen_down = [], False
        for i, v in enumerate(vs):
            if v is None:
                pen_down = False
                continue
            x, y = left + i * step, top + plot_h - plot_h * v / top_value
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>{escape(name)} '
                        f'{escape(x_labels[i])}: {escape(fmt(v))}</title></circle>')
        if path:
            body.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2" '
                        f'stroke-dasharray="{dash}"/>')
        lx = left + (n % 2) * 220
        ly = height - 22 + (n // 2) * 14
        body.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" stroke-width="2" '
                    f'stroke-dasharray="{dash}"/><text x="{lx + 27}" y="{ly}" class="small">{escape(name)}</text>')
    description = "; ".join(
        f"{name}: " + ", ".join(f"{x} {fmt(v)}" for x, v in zip(x_labels, vs) if v is not None) for name, vs in series)
    return _svg(chart_id, title, description[:2000], height, body)


def _y_axis(left: float, top: float, plot_w: float, plot_h: float, top_value: float, fmt) -> list[str]:
    body = []
    for fraction in (0, 0.5, 1):
        y = top + plot_h - plot_h * fraction
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                    f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="small">'
                    f'{escape(fmt(_round(top_value * fraction)))}</text>')
    return body


def _round(value: float) -> float:
    return int(value) if float(value).is_integer() or value >= 10 else round(value, 2)
