"""Summary curves of a field for quick looks: the shell-averaged spectrum and the plane-averaged profile.

Nothing here knows about HTTP. :func:`flow_curve` picks what suits a dataset: the spectrum stored in its
metadata (``extra["energy_spectrum"]``), else a spectrum computed from a cutout when every axis is periodic
and uniform, else the mean profile along the first wall-bounded axis (or None when that would read too much)::

    curve = flow_curve(ds.meta, ds.reader, t_index=0)
    curve.x, curve.y, curve.xlabel, curve.source   # "metadata" or "computed"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labservice.cutout.region import parse_range
from labservice.storage.metadata import AXES, DatasetMeta

MAX_EDGE = 64  # cutouts for the curves are strided down to about this many points per edge
MAX_READ_BYTES = 256 << 20  # above this much chunk data, a page does not compute a curve on the fly


@dataclass(frozen=True)
class Curve:
    """One curve and how to draw it.

    Attributes
    ----------
    kind : str
        ``"spectrum"`` or ``"profile"``.
    x, y : ndarray
        The abscissa (wavenumber or wall-normal coordinate) and the values.
    xlabel, ylabel, title : str
        Axis labels and a title.
    xlog, ylog : bool
        Whether each axis is logarithmic.
    source : str
        ``"metadata"`` (stored with the dataset) or ``"computed"`` (from a cutout now).
    time : float or None
        The stored time the curve belongs to, when computed.
    """

    kind: str
    x: np.ndarray
    y: np.ndarray
    xlabel: str
    ylabel: str
    title: str
    xlog: bool
    ylog: bool
    source: str
    time: float | None = None


def energy_spectrum(data: np.ndarray, lengths: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Shell-summed spectrum E(k) of a periodic field on a uniform grid.

    Parameters
    ----------
    data : ndarray
        Shape (nz, ny, nx, ncomp): the field at one time.
    lengths : tuple of float
        Period of the box along (x, y, z).

    Returns
    -------
    k, E : ndarray
        Shell wavenumbers ``k = 0, dk, 2 dk, ...`` with ``dk = 2 pi / max(lengths)``, and
        ``E(k) = sum over the shell of 0.5 sum_c |u_hat_c|^2``, normalised so that ``sum(E)`` is the
        mean of ``0.5 sum_c u_c^2`` over the box (Parseval).
    """
    data = np.asarray(data, dtype=np.float64)
    nz, ny, nx = data.shape[:3]
    lx, ly, lz = lengths
    # Wavenumbers per axis in physical units; the shell width is that of the longest axis.
    kz = 2 * np.pi * np.fft.fftfreq(nz, d=lz / nz)
    ky = 2 * np.pi * np.fft.fftfreq(ny, d=ly / ny)
    kx = 2 * np.pi * np.fft.rfftfreq(nx, d=lx / nx)
    dk = 2 * np.pi / max(lengths)
    kmag = np.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    shell = np.rint(kmag / dk).astype(np.int64)
    hat = np.fft.rfftn(data, axes=(0, 1, 2)) / (nx * ny * nz)
    density = 0.5 * np.sum(np.abs(hat) ** 2, axis=-1)
    # rfft keeps half of the x modes: count the others (all but kx = 0 and the Nyquist column) twice.
    weight = np.full(kx.shape, 2.0)
    weight[0] = 1.0
    if nx % 2 == 0:
        weight[-1] = 1.0
    energy = np.bincount(shell.ravel(), weights=(density * weight).ravel())
    return np.arange(energy.size) * dk, energy


def mean_profile(data: np.ndarray, coords: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """The average of each component over the planes normal to ``axis``.

    Parameters
    ----------
    data : ndarray
        Shape (nz, ny, nx, ncomp).
    coords : ndarray
        Coordinates along ``axis`` (length of that dimension).
    axis : str
        ``"x"``, ``"y"`` or ``"z"``.

    Returns
    -------
    coords, mean : ndarray
        ``mean`` has shape (len(coords), ncomp).
    """
    keep = {"z": 0, "y": 1, "x": 2}[axis]
    others = tuple(a for a in (0, 1, 2) if a != keep)
    mean = np.asarray(data, dtype=np.float64).mean(axis=others)
    return np.asarray(coords, dtype=np.float64), mean


def _stride(n: int) -> int:
    return max(1, -(-n // MAX_EDGE))


def _default_variable(meta: DatasetMeta) -> str:
    return "velocity" if "velocity" in meta.variables else sorted(meta.variables)[0]


def _spectrum_curve(k: np.ndarray, e: np.ndarray, title: str, source: str, time: float | None = None) -> Curve:
    """A log-log E(k) curve; points with k or E not positive cannot be drawn on it and are dropped."""
    keep = (k > 0) & (e > 0)
    return Curve("spectrum", k[keep], e[keep], "k", "E(k)", title, True, True, source, time)


def touched_bytes(meta: DatasetMeta, variable: str, ranges: dict[str, str | None]) -> int:
    """Bytes of the stored chunks a read of ``ranges`` (cutout ranges, e.g. ``"0:n:step"``, or None)
    decompresses."""
    var = meta.variables[variable]
    total = var.ncomp * np.dtype(var.dtype).itemsize
    for name, chunk in zip(AXES, meta.chunks, strict=True):
        axis = meta.grid.axis(name)
        chunks = np.unique(parse_range(ranges[name], name, axis).indices() // chunk).size
        total *= chunks * min(chunk, axis.size)
    return total


def flow_curve(
    meta: DatasetMeta,
    reader: object,
    t_index: int = 0,
    variable: str | None = None,
    max_read_bytes: int = MAX_READ_BYTES,
) -> Curve | None:
    """The spectrum or profile that best summarises a field dataset.

    Parameters
    ----------
    meta : DatasetMeta
        The dataset's metadata.
    reader : ChunkReader
        Its storage reader (only read when the metadata has no spectrum).
    t_index : int
        Index of the stored time to compute the curve at.
    variable : str, optional
        Variable to use; ``velocity`` when present, else the first by name.
    max_read_bytes : int
        Computing is skipped when the strided read would decompress more chunk bytes than this (a
        stride through a huge grid still touches a large share of its chunks).

    Returns
    -------
    Curve or None
        None when nothing is stored and computing would read more than ``max_read_bytes``.
    """
    stored = meta.extra.get("energy_spectrum")
    if isinstance(stored, dict) and "k" in stored and "E" in stored:
        k, e = np.asarray(stored["k"], dtype=float), np.asarray(stored["E"], dtype=float)
        return _spectrum_curve(k, e, f"{meta.id}: energy spectrum (stored)", "metadata")
    from labservice.cutout.region import read_cutout

    variable = variable or _default_variable(meta)
    grid_axes = [meta.grid.axis(a) for a in AXES]
    ranges = {a: f"0:{ax.size}:{_stride(ax.size)}" for a, ax in zip(AXES, grid_axes, strict=True)}
    walls = [a for a, ax in zip(AXES, grid_axes, strict=True) if not (ax.periodic and ax.uniform)]
    if walls:  # keep every point across the wall-bounded axis: that is where the profile lives
        ranges[walls[0]] = None
    if touched_bytes(meta, variable, ranges) > max_read_bytes:
        return None
    cut = read_cutout(reader, variable, t_index, **ranges)
    components = list(cut.components)
    if not walls:
        lengths = tuple(float(ax.period) for ax in grid_axes)
        k, e = energy_spectrum(cut.data, lengths)  # type: ignore[arg-type]
        what = "energy spectrum" if variable == "velocity" else f"spectrum of {variable}"
        return _spectrum_curve(k, e, f"{meta.id}: {what}, t = {cut.time:.4g}", "computed", float(cut.time))
    axis = walls[0]
    coords, mean = mean_profile(cut.data, getattr(cut, axis), axis)
    return Curve(
        "profile",
        coords,
        mean[:, 0],
        axis,
        f"<{components[0]}>",
        f"{meta.id}: mean {components[0]} across {axis}, t = {cut.time:.4g}",
        False,
        False,
        "computed",
        float(cut.time),
    )
