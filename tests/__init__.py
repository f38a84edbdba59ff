"""The test tree is a package so that its shared plugin imports as ``tests.plugin`` (see tests/conftest.py)."""
