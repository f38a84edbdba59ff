"""``npy``: the bare array ([time,] z, y, x, component) of one variable, streamed as it is read."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np

from labservice.cutout.formats.common import one_variable, planes
from labservice.cutout.formats.registry import Format, register
from labservice.cutout.layout import BlockSource


def encode_npy(source: BlockSource, stem: str) -> Iterator[bytes | memoryview]:
    layout = source.layout
    one_variable(layout, "npy")
    header = io.BytesIO()
    shape = layout.shape(layout.region)
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    yield header.getvalue()
    for block in planes(source):
        yield memoryview(block).cast("B")  # the block's own bytes: no copy


FORMAT = register(
    Format("npy", "application/octet-stream", ".npy", "npy (one variable)", encode=encode_npy, order=60,
           raw_tail=True)
)
