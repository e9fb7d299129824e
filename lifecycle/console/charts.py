"""Bar charts as inline SVG, drawn on the server: no script, nothing fetched."""

from __future__ import annotations

from collections.abc import Sequence

from lifecycle.console.page import esc

__all__ = ["bars"]


def bars(title: str, labels: Sequence[str], values: Sequence[int], *, width: int = 560, height: int = 180) -> str:
    """A bar per label, its value above it; ``title`` names the chart for screen readers too."""
    top, bottom, left = 22, 34, 8
    peak = max(values, default=0) or 1
    step = (width - 2 * left) / max(len(values), 1)
    parts = [f'<svg role=img aria-label="{esc(title)}" width={width} height={height} '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{esc(title)}</title>']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = (height - top - bottom) * value / peak
        x = left + i * step
        y = height - bottom - h
        parts.append(f'<rect x="{x + step * 0.15:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                     'fill="#1d4ed8"/>')
        parts.append(f'<text x="{x + step / 2:.1f}" y="{y - 4:.1f}" font-size="11" text-anchor="middle">'
                     f'{value}</text>')
        if len(labels) <= 12 or i % max(len(labels) // 10, 1) == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 14:.1f}" font-size="10" '
                         f'text-anchor="middle">{esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
