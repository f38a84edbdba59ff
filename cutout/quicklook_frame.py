"""The fast slice renderer: matplotlib draws each look's frame once, numpy paints the data into it.

Rendering the whole figure with matplotlib costs about 100 ms of GIL-bound Python per image, so under
load every slice request queued behind all the others. Here matplotlib draws the frame (axes, ticks,
labels, colour bar) once per figure size, extent, labels and colour map, with the data's artist (image or
mesh) replaced by placeholders of the same kind and place: black, white, and cells coloured by their
column and by their row index. Black and white give, for every pixel of the image box, how much of the
image shows through (spines and antialiased edges cover part of it) and what lies on top; the index
renders say which cell each pixel shows, so the resampling is matplotlib's own. The title and the colour
bar's ticks, labels and offset depend on the request: they are blitted onto the frame's saved background
(matplotlib's blitting) once per (title, limits), under the frame's lock. Per request only numpy and zlib
run: the colour map as a 256-entry lookup table (the same table and index rule as
:class:`matplotlib.colors.Colormap`), the pixels' cells, a copy of the cached frame, and a PNG written by
zlib (which, like numpy here, releases the GIL).

``tests/cutout/test_quicklook_fast.py`` compares these images pixel by pixel with matplotlib's.
"""

from __future__ import annotations

import functools
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from labservice.cutout.quicklook import DPI, Look, build_figure, render_matplotlib

FRAME_CACHE_BYTES = 64 << 20  # frames: the figure, its canvas and saved background, the pixel maps
BASE_CACHE_BYTES = 64 << 20  # decorated frames (title and colour-bar labels drawn), one per look
FAST_MAX_PIXELS = 4 << 20  # larger images go to matplotlib: their frames would crowd the cache out
PNG_LEVEL = 3  # zlib: as fast as 1 here (flat colour, repeated rows) and 2% smaller; 6 takes twice as long


class _Lru:
    """A thread-safe LRU cache bounded in bytes; one build at a time (builds are rare and GIL-bound)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()

    def _get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        return None

    def get(self, key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
        value = self._get(key)
        if value is not None:
            return value
        with self._build_lock:
            value = self._get(key)  # another thread may have built it while this one waited
            if value is not None:
                return value
            value, size = build()
            with self._lock:
                if size <= self.max_bytes:
                    self._items[key] = (value, size)
                    self._bytes += size
                    while self._bytes > self.max_bytes:
                        self._bytes -= self._items.popitem(last=False)[1][1]
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


_FRAMES = _Lru(FRAME_CACHE_BYTES)
_BASES = _Lru(BASE_CACHE_BYTES)


def _worth_a_frame(look: Look) -> bool:
    """Whether this look gets a frame: not when the image is so big that its frame would crowd the cache
    out (decided by the look alone, so that the same request always gives the same bytes)."""
    w_in, h_in = look.figure_inches()
    return w_in * h_in * DPI * DPI <= FAST_MAX_PIXELS


def _rgb(canvas: Any) -> np.ndarray:
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


@dataclass
class Frame:
    """One look's frame: the image box, how much of the image each box pixel shows, and the figure."""

    box: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1 of the image's bounding box
    rows: np.ndarray  # data row of each box row (top to bottom)
    cols: np.ndarray  # data column of each box column
    mixed: np.ndarray  # flat box indices of pixels not fully image (under spines, on edges)
    mixed_cover: np.ndarray  # (n, 1) uint16: how much of the image shows there, 0..255
    mixed_over: np.ndarray  # (n, 3) uint16: what lies on top there (the black render)
    fig: Any
    lock: threading.Lock
    background: Any  # the frame without title and colour-bar labels, for blitting

    def decorate(self, look: Look) -> np.ndarray:
        """The frame with this look's title and colour-bar ticks and labels drawn (RGB, H x W x 3)."""
        fig = self.fig
        ax, cax = fig.axes[0], fig.axes[1]
        with self.lock:
            fig.canvas.restore_region(self.background)
            ax.title.set_text(look.title)
            cax.set_ylim(look.lo, look.hi)  # the colour bar's axis (its gradient is the same for any limits)
            fig.draw_artist(ax.title)
            fig.draw_artist(cax.yaxis)
            return _rgb(fig.canvas)


def _frame_key(look: Look) -> Hashable:
    coords = None if look.coords is None else tuple(c.tobytes() for c in look.coords)
    static = (look.shape, look.extent, look.units, look.cmap, look.xlabel, look.ylabel, coords, look.width_px)
    # Constrained layout (small images) moves the axes to fit the title and labels: those join the key.
    return static if look.fixed_layout else (*static, look.title, look.lo, look.hi)


def _paint(ax: Any, look: Look, cells: np.ndarray) -> Any:
    """An artist of the same kind and place as the data's, with RGB ``cells`` (ny x nx x 3 uint8)."""
    if look.coords is None:
        return ax.imshow(cells, origin="lower", extent=look.extent, interpolation="nearest", aspect="auto")
    return ax.pcolormesh(*look.coords, cells, shading="nearest")


def _index_colours(n: int, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """Cells coloured by their index along ``axis``, in 24 bits (R the lowest byte)."""
    index = np.arange(n, dtype=np.uint32)
    rgb = np.stack([index & 255, (index >> 8) & 255, index >> 16], axis=-1).astype(np.uint8)
    return np.broadcast_to(rgb[:, None, :] if axis == 0 else rgb[None, :, :], (*shape, 3))


def _decode_index(line: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Cell index of each pixel of a line of an index render. Pixels not fully image (``full`` False:
    under a spine, on an antialiased edge) take the next full pixel's (the last one's at the far end)."""
    index = line[:, 0].astype(np.intp) | line[:, 1].astype(np.intp) << 8 | line[:, 2].astype(np.intp) << 16
    good = np.flatnonzero(full)
    return index[good[np.clip(np.searchsorted(good, np.arange(line.shape[0])), 0, good.size - 1)]]


class _NoImageBox(Exception):
    """The figure leaves no whole pixel of image to paint into."""


def _build_frame(look: Look, a: np.ndarray) -> tuple[Frame, int]:
    fig = build_figure(look, a)
    ax, cax = fig.axes[0], fig.axes[1]
    fig.canvas.draw()  # lays out the figure and places the title, as the full render does
    fig.set_layout_engine("none")  # keep that layout for the renders below
    title_at, x_lim, y_lim = ax.title.get_position(), ax.get_xlim(), ax.get_ylim()
    data_artist = (ax.images or ax.collections)[0]
    data_artist.set_visible(False)
    decoration = (ax.title, cax.yaxis)
    for artist in decoration:
        artist.set_visible(False)

    def render(cells: np.ndarray) -> np.ndarray:
        painted = _paint(ax, look, np.ascontiguousarray(cells))
        painted.set_zorder(data_artist.get_zorder())
        ax.set_xlim(x_lim)
        ax.set_ylim(y_lim)
        fig.canvas.draw()
        painted.remove()
        return _rgb(fig.canvas)

    ny, nx = look.shape
    black = render(np.zeros((ny, nx, 3), np.uint8))
    white = render(np.full((ny, nx, 3), 255, np.uint8))
    by_col, by_row = render(_index_colours(nx, 1, (ny, nx))), render(_index_colours(ny, 0, (ny, nx)))
    background = fig.canvas.copy_from_bbox(fig.bbox)
    for artist in decoration:
        artist.set_visible(True)
    ax.title.set_position(title_at)  # drawing without a visible title moved it

    cover = (white.astype(np.int16) - black).min(axis=2)  # 255 where the image shows fully
    r_any, c_any = np.flatnonzero(cover.max(axis=1) > 0), np.flatnonzero(cover.max(axis=0) > 0)
    if r_any.size == 0:
        raise _NoImageBox
    r0, r1, c0, c1 = int(r_any[0]), int(r_any[-1]) + 1, int(c_any[0]), int(c_any[-1]) + 1
    box_cover, box_black = cover[r0:r1, c0:c1], black[r0:r1, c0:c1]
    full = (box_cover == 255) & ~box_black.any(axis=2)
    mixed = np.flatnonzero(~full.ravel())
    mid_r, mid_c = (r1 - r0) // 2, (c1 - c0) // 2
    if not (full[mid_r].any() and full[:, mid_c].any()):
        raise _NoImageBox  # a layout squeezed the axes to (almost) nothing
    frame = Frame(
        box=(r0, r1, c0, c1),
        rows=_decode_index(by_row[r0:r1, c0 + mid_c], full[:, mid_c]),
        cols=_decode_index(by_col[r0 + mid_r, c0:c1], full[mid_r]),
        mixed=mixed,
        mixed_cover=box_cover.ravel()[mixed, None].astype(np.uint16),
        mixed_over=box_black.reshape(-1, 3)[mixed].astype(np.uint16),
        fig=fig,
        lock=threading.Lock(),
        background=background,
    )
    return frame, black.nbytes * 3  # the black render's copies, the canvas and the background


@functools.lru_cache(maxsize=16)
def colour_lut(cmap: str) -> np.ndarray:
    """The colour map's 256 RGB entries as matplotlib's images use them, plus white for NaN (the axes'
    background shows through matplotlib's transparent "bad" colour)."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    lut = np.vstack([cm(np.arange(cm.N), bytes=True)[:, :3], [[255, 255, 255]]]).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colour_index(a: np.ndarray, lo: float, hi: float, n: int = 256) -> np.ndarray:
    """Colour-table index of each value, by :class:`matplotlib.colors.Colormap`'s rule (values outside
    [lo, hi] take the end colours); NaN and infinities give ``n``, the white entry (matplotlib masks them)."""
    with np.errstate(all="ignore"):
        index = np.clip((a - lo) / (hi - lo) * n, 0, n - 1).astype(np.intp)
    index[~np.isfinite(a)] = n
    return index


def render_fast(look: Look, a: np.ndarray) -> bytes:
    """The slice image of ``a`` as :func:`~labservice.cutout.quicklook.render_slice_png` draws it."""
    key = _frame_key(look)
    if not _worth_a_frame(look):
        return render_matplotlib(look, a)
    try:
        frame: Frame = _FRAMES.get(key, lambda: _build_frame(look, a))
    except _NoImageBox:  # tiny figures: the axes have no room; draw what matplotlib draws
        return render_matplotlib(look, a)

    def decorated() -> tuple[np.ndarray, int]:
        base = frame.decorate(look)
        base.setflags(write=False)  # shared by every request for this look
        return base, base.nbytes

    base: np.ndarray = _BASES.get((key, look.title, look.lo, look.hi), decorated)
    rgb_cells = colour_lut(look.cmap)[colour_index(a, look.lo, look.hi)]
    r0, r1, c0, c1 = frame.box
    box = np.empty((r1 - r0, c1 - c0, 3), dtype=np.uint8)
    np.take(rgb_cells[frame.rows], frame.cols, axis=1, out=box)
    flat = box.reshape(-1, 3)  # a view: box is C-contiguous
    shown = (frame.mixed_cover * flat[frame.mixed] + 127) // 255
    flat[frame.mixed] = (frame.mixed_over + shown).astype(np.uint8)
    out = base.copy()
    out[r0:r1, c0:c1] = box
    return encode_png(out)


def encode_png(rgb: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (H x W x 3 uint8): every row with the "up" filter, then zlib."""
    height, width, _ = rgb.shape
    raw = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    raw[:, 0] = 2  # "up": each byte minus the byte above; rows repeated by the upscaling become zeros
    rows = rgb.reshape(height, 3 * width)
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(raw, level)
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", data), chunk(b"IEND", b"")])
