"""Small inline-SVG charts for the HTML report: horizontal (stacked) bars and a histogram.

Plain strings, no plotting library: the report must open offline with nothing else. Every text
that reaches the markup is escaped here; every bar carries a <title> (a tooltip, and what a
screen reader says) and its value is also written as text next to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape

FONT = 'font-family="system-ui, sans-serif" font-size="12"'
AXIS = "#666"
MARKER = "#c62828"


@dataclass(frozen=True)
class Segment:
    value: float
    color: str
    title: str  # tooltip of this piece of the bar


@dataclass(frozen=True)
class Bar:
    label: str
    segments: tuple[Segment, ...]
    note: str = ""  # written after the bar, e.g. "1,204 (45%)"


def bar(label: str, value: float, color: str, title: str | None = None, note: str | None = None) -> Bar:
    """A one-segment bar; its note defaults to the value."""
    return Bar(label, (Segment(value, color, title or f"{label}: {fmt(value)}"),),
               fmt(value) if note is None else note)


def fmt(x: float) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.2f}"
    return f"{int(x):,}"


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    t = escape(title)
    return (f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{t}" {FONT}><title>{t}</title>' + "".join(body) + "</svg>")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def hbars(bars: list[Bar], *, title: str, width: int = 760, label_width: int = 240,
          note_width: int = 130, row_height: int = 22) -> str:
    """Horizontal bars, one row per Bar, segments stacked left to right, scaled to the longest bar."""
    top = 4
    height = top + row_height * len(bars) + 4
    area = width - label_width - note_width
    longest = max((sum(s.value for s in b.segments) for b in bars), default=0) or 1
    body = []
    for i, b in enumerate(bars):
        y = top + i * row_height
        mid = y + row_height / 2 + 4
        # the row's <title> names the whole bar (even a zero one); each segment has its own
        summary = f"{b.label}: {b.note}" if b.note else b.label
        body.append(f'<g class="bar"><title>{escape(summary)}</title><text x="{label_width - 8}" y="{mid:.1f}" '
                    f'text-anchor="end">{escape(_clip(b.label, label_width // 7))}</text>')
        x = float(label_width)
        for s in b.segments:
            w = area * s.value / longest
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row_height - 6}" '
                            f'fill="{escape(s.color)}"><title>{escape(s.title)}</title></rect>')
            x += w
        if b.note:
            body.append(f'<text x="{x + 6:.1f}" y="{mid:.1f}" fill="#333">{escape(b.note)}</text>')
        body.append("</g>")
    return _svg(width, height, title, body)


def histogram(counts: list[int], *, title: str, lo: float = 0.0, hi: float = 1.0, color: str = "#4a78b5",
              marker: float | None = None, marker_label: str = "", unit: str = "rows",
              width: int = 400, height: int = 190) -> str:
    """Vertical bins of equal width over [lo, hi]; an optional dashed marker line (a threshold)."""
    left, right, top, bottom = 44, 10, 18, 26
    pw, ph = width - left - right, height - top - bottom
    n = len(counts) or 1
    peak = max(counts, default=0) or 1
    step = (hi - lo) / n
    digits = 2 if hi - lo > 0.2 else 4  # scores packed near 0.5 need more places to tell bins apart
    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="{AXIS}"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="{AXIS}"/>',
            f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="{AXIS}">{peak:,}</text>',
            f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" fill="{AXIS}">0</text>']
    for i, c in enumerate(counts):
        h = ph * c / peak
        x = left + pw * i / n
        a, b = lo + i * step, lo + (i + 1) * step
        body.append(f'<rect x="{x + 1:.1f}" y="{top + ph - h:.1f}" width="{pw / n - 2:.1f}" height="{h:.1f}" '
                    f'fill="{escape(color)}"><title>{a:.{digits}f}–{b:.{digits}f}: {c:,} {escape(unit)}</title></rect>')
    for k in range(5):  # ticks at the quarters
        v = lo + (hi - lo) * k / 4
        x = left + pw * k / 4
        body.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" stroke="{AXIS}"/>'
                    f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" fill="{AXIS}">{v:.{digits}g}</text>')
    if marker is not None and lo <= marker <= hi:
        x = left + pw * (marker - lo) / (hi - lo)
        anchor = "end" if marker > lo + 0.7 * (hi - lo) else "start"
        dx = -4 if anchor == "end" else 4
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + ph}" stroke="{MARKER}" '
                    f'stroke-width="2" stroke-dasharray="5 3"><title>{escape(marker_label)}</title></line>'
                    f'<text x="{x + dx:.1f}" y="{top - 6}" text-anchor="{anchor}" fill="{MARKER}">'
                    f'{escape(marker_label)}</text>')
    return _svg(width, height, title, body)
