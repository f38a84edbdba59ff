"""Morton-indexed particle cutouts equal brute force, periodic wrap included, and read only what they touch."""

from __future__ import annotations

import numpy as np
import pytest

from labservice.errors import InvalidInput
from labservice.storage.particles import ParticleSnapshot, write_particles

BOX = 50.0


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    rng = np.random.default_rng(11)
    pos = rng.uniform(0, BOX, size=(20000, 3))
    vel = rng.normal(size=(20000, 3))
    path = write_particles(tmp_path_factory.mktemp("p") / "snap", pos, vel, np.arange(20000, dtype=np.uint64), BOX)
    return ParticleSnapshot(path)


@pytest.mark.parametrize(
    "centre,radius",
    [((25, 25, 25), 3.0), ((0.2, 0.1, 49.9), 4.0), ((49.0, 0.5, 25.0), 7.5), ((10, 40, 0), 25.0), ((-1, 51, 3), 2.0)],
)
def test_sphere_equals_brute_force(snap, centre, radius):
    got = snap.sphere(centre, radius)
    ref = snap.brute_sphere(np.mod(centre, BOX), radius)
    assert got["ParticleIDs"].size > 0
    assert sorted(got["ParticleIDs"].tolist()) == sorted(ref["ParticleIDs"].tolist())
    assert np.all(np.sqrt((got["Offsets"].astype(float) ** 2).sum(axis=1)) <= radius + 1e-5)
    order = np.argsort(got["ParticleIDs"])
    np.testing.assert_array_equal(got["Velocities"][order], ref["Velocities"][np.argsort(ref["ParticleIDs"])])


def test_small_sphere_reads_a_small_part(snap):
    snap.bytes_read = 0
    snap.sphere((1.0, 1.0, 1.0), 2.0, fields=["ParticleIDs"])
    total = snap.count * (12 + 8)
    assert 0 < snap.bytes_read < 0.05 * total


def test_box_query_wraps(snap):
    lo, hi = np.array([45.0, -3.0, 10.0]), np.array([53.0, 4.0, 20.0])
    got = snap.box_query(lo, hi, fields=["Coordinates", "ParticleIDs"])
    coords = np.asarray(snap._arrays["Coordinates"], dtype=np.float64)
    rel = (coords - lo) % BOX
    expected = np.asarray(snap._arrays["ParticleIDs"])[np.all(rel < hi - lo, axis=1)]
    assert sorted(got["ParticleIDs"].tolist()) == sorted(expected.tolist())


def test_bad_requests(snap):
    with pytest.raises(InvalidInput, match="radius"):
        snap.sphere((1, 1, 1), 30.0)
    with pytest.raises(InvalidInput, match="Did you mean"):
        snap.sphere((1, 1, 1), 1.0, fields=["Coordinate"])
