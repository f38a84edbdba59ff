"""The threaded ingest and its memory-mapped sources write the same bytes as one thread reading through h5py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from labservice.datasets.ingest import ingest_descriptor, load_descriptor
from labservice.datasets.ingest.loop import pending_shards
from labservice.datasets.ingest.sources import VariableSource
from labservice.storage import open_store
from tests.plugin.sources import write_sources


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}  # fmt: skip


def _dataset_names(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def _rechunk(folder: Path) -> None:
    """Rewrite every HDF5 dataset chunked and compressed, so it cannot be memory-mapped."""
    for path in folder.rglob("*.h5"):
        with h5py.File(path, "r+") as f:
            names = [n for n in _dataset_names(f) if f[n].ndim >= 3]
            for name in names:
                data = f[name][()]
                del f[name]
                f.create_dataset(name, data=data, chunks=True, compression="gzip")


@pytest.mark.parametrize("layout", ["separate", "last", "first"])
@pytest.mark.parametrize("order", ["zyx", "xyz"])
def test_threads_and_memory_maps_give_the_same_bytes(tmp_path, layout, order):
    mapped = write_sources(tmp_path / "mapped", order=order, layout=layout, seed=11)
    read = write_sources(tmp_path / "read", order=order, layout=layout, seed=11)
    _rechunk(tmp_path / "read")
    one = Path(ingest_descriptor(read.descriptor, progress=False, threads=1))
    many = Path(ingest_descriptor(mapped.descriptor, progress=False, threads=3))
    assert _tree(many) == _tree(one) and len(_tree(one)) > 10
    group = zarr.open_group(str(many), mode="r")
    for name, want in mapped.expected.items():
        np.testing.assert_array_equal(group[name][:], want)


def test_contiguous_sources_are_memory_mapped_and_chunked_ones_are_not(tmp_path):
    src = write_sources(tmp_path / "a")
    url = ingest_descriptor(src.descriptor, progress=False)
    store = open_store(url)
    desc = load_descriptor(src.descriptor)
    var = VariableSource("velocity", desc.variables["velocity"], store.meta, src.descriptor.parent, src.descriptor)
    handle = var.open(0)
    assert all(m is not None for m in handle.maps)
    handle.file.close()
    _rechunk(tmp_path / "a")
    handle = var.open(0)
    assert all(m is None for m in handle.maps)
    handle.file.close()
    assert pending_shards(store, store.meta, ["velocity", "pressure"])[0] == []
