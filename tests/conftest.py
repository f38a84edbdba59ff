"""Registers the shared plugin (tests/plugin): every shared fixture and helper lives there, not in conftests.

Test modules import helpers by name (``from tests.plugin.grids import uniform_axis``); pyproject's
``pythonpath = ["."]`` makes the repository root importable, so ``tests``, ``benchmarks`` and ``examples``
import as packages whether pytest starts as ``pytest`` or ``python -m pytest``.
"""

pytest_plugins = [
    "tests.plugin.data",
    "tests.plugin.stack",
    "tests.plugin.s3",
    "tests.plugin.dask",
    "tests.plugin.redis",
    "tests.plugin.postgres",
    "tests.plugin.counting",
    "tests.plugin.cli",
    "tests.plugin.collab",
]
