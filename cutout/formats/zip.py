"""``zip``: the ``.h5`` and its ``.xmf`` sidecar in one uncompressed zip."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from labservice.cutout.formats.common import zip_add
from labservice.cutout.formats.hdf5 import write_hdf5
from labservice.cutout.formats.registry import Format, register
from labservice.cutout.layout import BlockSource


def write_zip(source: BlockSource, path: Path) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="cutout-") as tmp:
        stem = path.name.removesuffix(".zip") or "cutout"
        files = write_hdf5(source, Path(tmp) / f"{stem}.h5")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for f in files:
                zip_add(z, f, f.name)
    return [path]


FORMAT = register(
    Format(
        "zip",
        "application/zip",
        ".zip",
        "zip (hdf5 + XDMF sidecar)",
        write=write_zip,
        aliases=("hdf5+xdmf",),
        order=20,
    )
)
