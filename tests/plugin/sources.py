"""Small real HDF5 simulation outputs laid out in every supported way, plus their ingest descriptors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

SHAPE = (20, 12, 9)  # nx, ny, nz: several shards along x and partial edge chunks everywhere
TIMES = 3


@dataclass
class Sources:
    """Written sources: the descriptor path and the exact values each variable must have, [t, z, y, x, c]."""

    descriptor: Path
    expected: dict[str, np.ndarray]
    doc: dict[str, Any]

    def rewrite(self, **changes: Any) -> Path:
        """Write the descriptor again with top-level keys changed."""
        self.doc.update(changes)
        self.descriptor.write_text(yaml.safe_dump(self.doc, sort_keys=False))
        return self.descriptor


def _to_order(a: np.ndarray, order: str) -> np.ndarray:
    """A (..., z, y, x) array in the file's axis order."""
    return a if order == "zyx" else np.swapaxes(a, -1, -3)


def write_sources(
    folder: Path,
    order: str = "zyx",
    layout: str = "separate",
    per_time_step: bool = True,
    stretched: bool = False,
    source_dtype: str = "float64",
    seed: int = 0,
) -> Sources:
    """Random velocity (3) and pressure (1) in HDF5 files, laid out as asked, and a descriptor for them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nx, ny, nz = SHAPE
    vel = rng.standard_normal((TIMES, nz, ny, nx, 3)).astype(source_dtype)
    pres = rng.standard_normal((TIMES, nz, ny, nx, 1)).astype(source_dtype)

    def velocity_datasets(v: np.ndarray) -> dict[str, np.ndarray]:
        # v: ([t,] z, y, x, 3)
        if layout == "separate":
            return {name: _to_order(v[..., c], order) for c, name in enumerate(("u", "v", "w"))}
        spatial = _to_order(np.moveaxis(v, -1, 0), order)  # (3, [t,] ...)
        if layout == "last":
            return {"velocity": np.moveaxis(spatial, 0, -1)}
        return {"velocity": np.moveaxis(spatial, 0, -4)}  # components just before the three space axes

    if per_time_step:
        files = "out/snap_{t:04d}.h5"
        (folder / "out").mkdir(exist_ok=True)
        for t in range(TIMES):
            with h5py.File(folder / files.format(t=t), "w") as f:
                for name, data in velocity_datasets(vel[t]).items():
                    f.create_dataset("fields/" + name, data=data)
                f.create_dataset("fields/p", data=_to_order(pres[t, ..., 0], order))
    else:
        files = "all_times.h5"
        with h5py.File(folder / files, "w") as f:
            for name, data in velocity_datasets(vel).items():
                f.create_dataset("fields/" + name, data=data)
            f.create_dataset("fields/p", data=_to_order(pres[..., 0], order))

    y_axis: dict[str, Any] = {"start": -1.0, "step": 2.0 / (ny - 1)}
    if stretched:
        y = np.tanh(2.0 * np.linspace(-1, 1, ny)) / np.tanh(2.0)
        with h5py.File(folder / "grid.h5", "w") as f:
            f.create_dataset("coords/y", data=y)
        y_axis = {"coordinates": "grid.h5:/coords/y"}
    names = ["/fields/u", "/fields/v", "/fields/w"] if layout == "separate" else ["/fields/velocity"]
    doc = {
        "id": "mysim",
        "title": "My simulation",
        "grid": {
            "shape": list(SHAPE),
            "x": {"start": 0.0, "step": 0.1122},
            "y": y_axis,
            "z": {"start": 0.0, "step": 0.1571},
            "periodic": [True, False, True],
        },
        "times": {"start": 0.0, "step": 0.002, "count": TIMES},
        "variables": {
            "velocity": {
                "components": ["ux", "uy", "uz"],
                "units": "m/s",
                "source": {"files": files, "datasets": names, "order": order, "layout": layout},
            },
            "pressure": {
                "components": ["p"],
                "source": {"files": files, "datasets": ["/fields/p"], "order": order},
            },
        },
        "store": "./store/mysim",
        "chunks": [8, 8, 8],
        "shards": [16, 8, 8],
    }
    path = folder / "mysim.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    expected = {"velocity": vel.astype(np.float32), "pressure": pres.astype(np.float32)}
    return Sources(path, expected, doc)
