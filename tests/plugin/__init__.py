"""The shared pytest plugin of the test suite, registered by ``pytest_plugins`` in tests/conftest.py.

One fixture chain serves every folder that talks HTTP (``stack``): ``served_data`` (the datasets) ->
``settings`` -> ``app`` -> ``server`` -> ``http`` / ``lab`` -> ``tokens`` / ``make_token``. A folder's
conftest only chooses its data and settings (and names its tokens); the chain itself lives here, once.

Fixture modules (registered): ``data`` (demo data, sample datasets), ``stack`` (the chain), ``s3`` (a real
SeaweedFS S3 server), ``dask`` (a real Dask scheduler and workers).
Helper modules (imported by name, ``from tests.plugin.grids import uniform_axis``): ``grids`` (small
synthetic datasets and axes), ``sources`` (HDF5 sources and ingest descriptors), ``cosmo`` (the small
simulation), ``jobs`` (job engine helpers; ``engine_proc`` runs an engine as a separate process),
``portal`` (browser constants).
"""
