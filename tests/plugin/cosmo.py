"""The small real simulation of the cosmology tests: 32^3 particles in 50 Mpc/h, 8 snapshots (a few seconds)."""

from __future__ import annotations

from pathlib import Path

from labservice.datasets.demo.build import build_cosmo

SIM = "apisim"  # the id the cosmology API tests serve it under


def build_small_sim(folder: Path, name: str | None = None) -> Path:
    """A real PM run ingested through the Gadget files; returns the dataset folder."""
    return build_cosmo(folder, size=32, n_snapshots=8, seed=7, box=50.0, name=name)
