"""Small inline SVG line plots for the portal pages (no JavaScript, no external fonts, CSP-safe).

Styling uses SVG presentation attributes only, never ``style=`` attributes, so the portal's
``style-src 'self'`` policy holds.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

WIDTH, HEIGHT = 640, 360
MARGIN = {"left": 72, "right": 16, "top": 32, "bottom": 48}


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float, log: bool) -> str:
    if log:
        return f"1e{round(value):d}"
    return f"{value:.4g}"


def line_plot_svg(
    x: np.ndarray,
    y: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    xlog: bool = False,
    ylog: bool = False,
    markers: bool = False,
    element_id: str = "plot",
) -> str:
    """An SVG document fragment drawing y against x, with axes, ticks and labels.

    Parameters
    ----------
    x, y : array_like
        The points; non-finite values (and non-positive ones on a log axis) are left out.
    xlabel, ylabel, title : str
        Text; escaped here.
    xlog, ylog : bool
        Logarithmic axes (ticks at powers of ten).
    markers : bool
        Also draw a dot at each point.
    element_id : str
        The ``id`` of the ``<svg>`` element.

    Returns
    -------
    str
        ``<svg>...</svg>`` markup, safe to insert into HTML as it is.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if xlog:
        ok &= x > 0
    if ylog:
        ok &= y > 0
    x, y = x[ok], y[ok]
    tx = np.log10(x) if xlog else x
    ty = np.log10(y) if ylog else y
    left, right, top, bottom = (
        MARGIN["left"],
        WIDTH - MARGIN["right"],
        MARGIN["top"],
        HEIGHT - MARGIN["bottom"],
    )
    parts = [
        f'<svg id="{escape(element_id)}" class="plot" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" data-points="{len(x)}">',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    if len(x) == 0:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data to plot</text></svg>'
        )
        return "".join(parts)
    x0, x1 = float(tx.min()), float(tx.max())
    y0, y1 = float(ty.min()), float(ty.max())
    if xlog:
        x0, x1 = math.floor(x0), max(math.ceil(x1), math.floor(x0) + 1)
    if ylog:
        y0, y1 = math.floor(y0), max(math.ceil(y1), math.floor(y0) + 1)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (right - left)

    def py(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#888"/>'
    )
    xticks = list(range(int(x0), int(x1) + 1)) if xlog else _nice_ticks(x0, x1)
    yticks = list(range(int(y0), int(y1) + 1)) if ylog else _nice_ticks(y0, y1)
    for t in xticks:
        parts.append(
            f'<line x1="{px(t):.1f}" y1="{bottom}" x2="{px(t):.1f}" y2="{bottom + 5}" stroke="#444"/>'
        )
        parts.append(
            f'<text x="{px(t):.1f}" y="{bottom + 18}" text-anchor="middle" font-size="11">{_label(t, xlog)}</text>'
        )
    for t in yticks:
        parts.append(f'<line x1="{left - 5}" y1="{py(t):.1f}" x2="{left}" y2="{py(t):.1f}" stroke="#444"/>')
        parts.append(
            f'<text x="{left - 8}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="11">{_label(t, ylog)}</text>'
        )
    parts.append(
        f'<text x="{(left + right) / 2}" y="{HEIGHT - 10}" text-anchor="middle" font-size="12">{escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="16" y="{(top + bottom) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 16 {(top + bottom) / 2})">{escape(ylabel)}</text>'
    )
    path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(tx, ty, strict=True))
    parts.append(f'<polyline points="{path}" fill="none" stroke="#1f5fa8" stroke-width="2"/>')
    if markers:
        parts.extend(
            f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="#1f5fa8"/>'
            for a, b in zip(tx, ty, strict=True)
        )
    parts.append("</svg>")
    return "".join(parts)
