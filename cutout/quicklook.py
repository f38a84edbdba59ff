"""Quick-look PNG images of one plane of one component, with a colour bar: the one renderer behind the
``slice.png`` route and :func:`cutout_slice_png` in notebooks.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never through
``pyplot``, so no global figure state is shared between threads or leaks between requests. The default
renderer, ``fast`` (:mod:`~labservice.cutout.quicklook_frame`), has matplotlib draw each look's frame once
and paints the data in with numpy; ``matplotlib`` draws the whole figure per image and is the reference.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labservice.cutout.region import Cutout
from labservice.errors import InvalidInput, LimitExceeded, unknown

COLORMAPS = ("RdBu_r", "viridis", "magma", "cividis", "gray")
MAX_PIXELS = 4096 * 4096
PLANE_AXES = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}  # normal -> (horizontal, vertical)
MAX_PLANE_EDGE = 1024  # larger planes are strided down to about this many pixels per edge
RENDERERS = ("fast", "matplotlib")
DPI = 100


def plane_ranges(meta: Any, normal: str, index: int) -> dict[str, str]:
    """Index ranges of one plane for :func:`~labservice.cutout.region.plan_cutout`: one index along the
    normal, the whole in-plane axes (strided when longer than :data:`MAX_PLANE_EDGE`)."""
    ranges = {normal: f"{index}:{index + 1}"}
    for name in PLANE_AXES[normal]:
        n = meta.grid.axis(name).size
        ranges[name] = f"0:{n}:{max(1, -(-n // MAX_PLANE_EDGE))}"
    return ranges


def component_index(components: Sequence[str], component: str | int) -> int:
    """The index of a component given by name, by number, or by a number as text ("0")."""
    if isinstance(component, str) and component in components:
        return list(components).index(component)
    if isinstance(component, int) or component.isdigit():
        c = int(component)
        if not 0 <= c < len(components):
            raise InvalidInput(f"component must be in [0, {len(components) - 1}]; got {c}")
        return c
    raise unknown("component", component, components, error=InvalidInput)


def _limits(plane: np.ndarray, cmap: str, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """Colour limits: given ones, else symmetric about 0 for the diverging map, else the data range."""
    finite = plane[np.isfinite(plane)]
    if vmin is None or vmax is None:
        if finite.size == 0:
            lo, hi = 0.0, 1.0
        elif cmap == "RdBu_r":
            m = float(np.max(np.abs(finite)))
            lo, hi = -m, m
        else:
            lo, hi = float(finite.min()), float(finite.max())
        vmin = lo if vmin is None else float(vmin)
        vmax = hi if vmax is None else float(vmax)
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise InvalidInput(f"vmin and vmax must be finite; got {vmin}, {vmax}")
    if vmin > vmax:
        raise InvalidInput(f"vmin must be below vmax; got vmin={vmin}, vmax={vmax}")
    if vmin == vmax:  # a constant plane still gets a readable colour bar
        pad = abs(vmin) * 1e-6 or 1.0
        vmin, vmax = vmin - pad, vmax + pad
    return vmin, vmax


def render_slice_png(
    plane: np.ndarray,
    extent: Sequence[float],
    title: str,
    units: str,
    cmap: str = "RdBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    coords: tuple[np.ndarray, np.ndarray] | None = None,
    width_px: int = 720,
    renderer: str = "fast",
) -> bytes:
    """Render a 2-D plane as a PNG with axis labels and a colour bar.

    Parameters
    ----------
    plane : ndarray
        2-D array; rows follow the vertical axis, columns the horizontal one. NaN shows as blank.
    extent : sequence of 4 floats
        (left, right, bottom, top) in physical units, used when ``coords`` is None.
    title : str
        Figure title, e.g. ``"isotropic64 velocity ux, z = 3.14, t = 0.3"``.
    units : str
        Units shown on the colour bar.
    cmap : str
        One of :data:`COLORMAPS`.
    vmin, vmax : float, optional
        Colour limits; by default symmetric about 0 for ``RdBu_r`` and the data range otherwise.
    xlabel, ylabel : str
        Axis labels.
    coords : (ndarray, ndarray), optional
        Node coordinates along the horizontal and vertical axes, for non-uniform grids (drawn with
        ``pcolormesh`` instead of an image).
    width_px : int
        Image width in pixels (the height follows the plane's aspect ratio, within limits).
    renderer : str
        ``"fast"`` (matplotlib draws the frame once per look, numpy fills in the data: see
        :mod:`~labservice.cutout.quicklook_frame`) or ``"matplotlib"`` (the whole figure per call; the
        reference the fast one is tested against).

    Returns
    -------
    bytes
        The PNG file.
    """
    a = np.asarray(plane, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise InvalidInput(f"a slice image needs a non-empty 2-D plane; got shape {list(a.shape)}")
    if cmap not in COLORMAPS:
        raise unknown("colour map", cmap, COLORMAPS, error=InvalidInput)
    if renderer not in RENDERERS:
        raise unknown("renderer", renderer, RENDERERS, error=InvalidInput)
    ext = [float(e) for e in extent]
    if len(ext) != 4 or not np.all(np.isfinite(ext)):
        raise InvalidInput(f"extent must be 4 finite numbers (left, right, bottom, top); got {list(extent)}")
    if not 64 <= int(width_px) <= 4096:
        raise InvalidInput(f"width_px must be in [64, 4096]; got {width_px}")
    if coords is not None:
        cx, cy = (np.asarray(c, dtype=np.float64) for c in coords)
        if cx.shape != (a.shape[1],) or cy.shape != (a.shape[0],):
            raise InvalidInput(
                f"coords must have lengths {a.shape[1]} and {a.shape[0]} to match the plane; "
                f"got {cx.size} and {cy.size}"
            )
        coords = (cx, cy)
    lo, hi = _limits(a, cmap, vmin, vmax)
    look = Look(a.shape, tuple(ext), title, units, cmap, lo, hi, xlabel, ylabel, coords, int(width_px))
    if renderer == "fast":
        from labservice.cutout.quicklook_frame import render_fast

        return render_fast(look, a)
    return render_matplotlib(look, a)


def render_matplotlib(look: Look, a: np.ndarray) -> bytes:
    """The PNG of the whole figure drawn by matplotlib."""
    buf = io.BytesIO()
    build_figure(look, a).savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


@dataclass(frozen=True)
class Look:
    """Everything but the data that decides what a slice image looks like."""

    shape: tuple[int, ...]
    extent: tuple[float, ...]
    title: str
    units: str
    cmap: str
    lo: float
    hi: float
    xlabel: str
    ylabel: str
    coords: tuple[np.ndarray, np.ndarray] | None
    width_px: int

    def figure_inches(self) -> tuple[float, float]:
        """Figure width and height in inches (the height follows the plane's aspect ratio, within limits)."""
        ext = self.extent
        aspect = np.clip(abs(ext[3] - ext[2]) / max(abs(ext[1] - ext[0]), 1e-300), 0.25, 4.0)
        w_in = self.width_px / DPI
        h_in = max(2.0, w_in * 0.8 * aspect + 0.9)
        if w_in * h_in * DPI * DPI > MAX_PIXELS:
            raise LimitExceeded("the image would be too large; ask for a smaller width_px")
        return w_in, float(h_in)

    @property
    def fixed_layout(self) -> bool:
        """Fixed margins (the title and colour-bar labels do not move the axes) for images >= 4 inches."""
        return self.width_px / DPI >= 4.0


def build_figure(look: Look, a: np.ndarray) -> Any:
    """The matplotlib figure of one slice image (axes, image, title, colour bar), on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w_in, h_in = look.figure_inches()
    # Fixed margins in inches instead of constrained layout, which cost half the render time (GIL-bound:
    # under load every slice request competes with all the others for it).
    # Small images keep constrained layout, which fits the labels where fixed margins would not.
    left, right, bottom, top, bar_w, gap = 0.75, 1.05, 0.55, 0.4, 0.15, 0.15
    fig = Figure(figsize=(w_in, h_in), dpi=DPI, layout=None if look.fixed_layout else "constrained")
    FigureCanvasAgg(fig)
    if look.fixed_layout:
        plot_w, plot_h = w_in - left - right, h_in - bottom - top
        ax = fig.add_axes((left / w_in, bottom / h_in, plot_w / w_in, plot_h / h_in))
        cax = fig.add_axes(((left + plot_w + gap) / w_in, bottom / h_in, bar_w / w_in, plot_h / h_in))
    else:
        ax, cax = fig.add_subplot(), None
    style = {"cmap": look.cmap, "vmin": look.lo, "vmax": look.hi}
    if look.coords is None:
        im = ax.imshow(a, origin="lower", extent=look.extent, interpolation="nearest", aspect="auto", **style)
    else:
        im = ax.pcolormesh(*look.coords, a, shading="nearest", **style)
    ax.set_xlabel(look.xlabel)
    ax.set_ylabel(look.ylabel)
    ax.set_title(look.title, fontsize="medium")
    bar = fig.colorbar(im, cax=cax) if cax is not None else fig.colorbar(im, ax=ax)
    bar.set_label(look.units or "(no units)")
    return fig


def cutout_slice_png(
    cutout: Cutout,
    component: str | int = 0,
    cmap: str = "RdBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    width_px: int = 720,
    normal: str | None = None,
    renderer: str = "fast",
) -> bytes:
    """Render a cutout that is one point thick along one axis (a plane) as a labelled PNG.

    Read the plane with :func:`read_cutout` giving a single index on the normal axis, e.g.
    ``z="16"`` (or plan it with :func:`plane_ranges`); the other two axes become the image axes (x
    horizontal unless x is the normal). ``normal`` names the normal when more than one axis is thin.

    Raises
    ------
    InvalidInput
        When the cutout is not a plane, or the component is unknown.
    """
    nz, ny, nx, _ = cutout.data.shape
    thin = [name for name, n in zip("zyx", (nz, ny, nx), strict=True) if n == 1]
    if normal is None and not thin:
        raise InvalidInput(f"a slice needs one axis of size 1 (e.g. z='16'); got a {nx} x {ny} x {nz} cutout")
    normal = normal or thin[0]
    c = component_index(cutout.components, component)
    h_axis, v_axis = PLANE_AXES[normal]
    plane = np.take(cutout.data[..., c], 0, axis="zyx".index(normal))  # rows follow v_axis
    h, v = getattr(cutout, h_axis), getattr(cutout, v_axis)
    position = float(getattr(cutout, normal)[0])
    title = (
        f"{cutout.dataset} {cutout.variable} {cutout.components[c]}, "
        f"{normal} = {position:.4g}, t = {cutout.time:.4g}"
    )
    uniform = all(a.size < 2 or np.allclose(np.diff(a), np.diff(a)[0], rtol=1e-6) for a in (h, v))
    return render_slice_png(
        plane,
        extent=_extent(h, v),
        title=title,
        units=cutout.units,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        xlabel=h_axis,
        ylabel=v_axis,
        coords=None if uniform else (h, v),
        width_px=width_px,
        renderer=renderer,
    )


def _extent(h: np.ndarray, v: np.ndarray) -> tuple[float, float, float, float]:
    """Cell-edge extent of node-centred pixels (half a spacing beyond the first and last nodes)."""

    def edges(a: np.ndarray) -> tuple[float, float]:
        d = float(a[1] - a[0]) if a.size > 1 else 1.0
        e = float(a[-1] - a[-2]) if a.size > 1 else 1.0
        return float(a[0]) - d / 2, float(a[-1]) + e / 2

    return (*edges(h), *edges(v))
