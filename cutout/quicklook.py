"""Quick-look PNG images of one plane of one component, with a colour bar: the one renderer behind the
``slice.png`` route and :func:`cutout_slice_png` in notebooks.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never through
``pyplot``, so no global figure state is shared between threads or leaks between requests.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from labservice.cutout.region import Cutout
from labservice.errors import InvalidInput, LimitExceeded, unknown

COLORMAPS = ("RdBu_r", "viridis", "magma", "cividis", "gray")
MAX_PIXELS = 4096 * 4096
PLANE_AXES = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}  # normal -> (horizontal, vertical)
MAX_PLANE_EDGE = 1024  # larger planes are strided down to about this many pixels per edge


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

    Returns
    -------
    bytes
        The PNG file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a = np.asarray(plane, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise InvalidInput(f"a slice image needs a non-empty 2-D plane; got shape {list(a.shape)}")
    if cmap not in COLORMAPS:
        raise unknown("colour map", cmap, COLORMAPS, error=InvalidInput)
    ext = [float(e) for e in extent]
    if len(ext) != 4 or not np.all(np.isfinite(ext)):
        raise InvalidInput(f"extent must be 4 finite numbers (left, right, bottom, top); got {list(extent)}")
    if not 64 <= int(width_px) <= 4096:
        raise InvalidInput(f"width_px must be in [64, 4096]; got {width_px}")
    lo, hi = _limits(a, cmap, vmin, vmax)

    dpi = 100
    aspect = np.clip(abs(ext[3] - ext[2]) / max(abs(ext[1] - ext[0]), 1e-300), 0.25, 4.0)
    w_in = int(width_px) / dpi
    h_in = max(2.0, w_in * 0.8 * aspect + 0.9)
    if w_in * h_in * dpi * dpi > MAX_PIXELS:
        raise LimitExceeded("the image would be too large; ask for a smaller width_px")
    # Fixed margins in inches instead of constrained layout, which cost half the render time (GIL-bound:
    # under load every slice request competes with all the others for it).
    # Small images keep constrained layout, which fits the labels where fixed margins would not.
    left, right, bottom, top, bar_w, gap = 0.75, 1.05, 0.55, 0.4, 0.15, 0.15
    fixed = w_in >= 4.0
    fig = Figure(figsize=(w_in, h_in), dpi=dpi, layout=None if fixed else "constrained")
    FigureCanvasAgg(fig)
    if fixed:
        plot_w, plot_h = w_in - left - right, h_in - bottom - top
        ax = fig.add_axes((left / w_in, bottom / h_in, plot_w / w_in, plot_h / h_in))
        cax = fig.add_axes(((left + plot_w + gap) / w_in, bottom / h_in, bar_w / w_in, plot_h / h_in))
    else:
        ax, cax = fig.add_subplot(), None
    if coords is None:
        im = ax.imshow(
            a, origin="lower", extent=ext, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="auto"
        )
    else:
        cx, cy = (np.asarray(c, dtype=np.float64) for c in coords)
        if cx.shape != (a.shape[1],) or cy.shape != (a.shape[0],):
            raise InvalidInput(
                f"coords must have lengths {a.shape[1]} and {a.shape[0]} to match the plane; "
                f"got {cx.size} and {cy.size}"
            )
        im = ax.pcolormesh(cx, cy, a, cmap=cmap, vmin=lo, vmax=hi, shading="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    bar = fig.colorbar(im, cax=cax) if cax is not None else fig.colorbar(im, ax=ax)
    bar.set_label(units or "(no units)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def cutout_slice_png(
    cutout: Cutout,
    component: str | int = 0,
    cmap: str = "RdBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    width_px: int = 720,
    normal: str | None = None,
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
    )


def _extent(h: np.ndarray, v: np.ndarray) -> tuple[float, float, float, float]:
    """Cell-edge extent of node-centred pixels (half a spacing beyond the first and last nodes)."""

    def edges(a: np.ndarray) -> tuple[float, float]:
        d = float(a[1] - a[0]) if a.size > 1 else 1.0
        e = float(a[-1] - a[-2]) if a.size > 1 else 1.0
        return float(a[0]) - d / 2, float(a[-1]) + e / 2

    return (*edges(h), *edges(v))
