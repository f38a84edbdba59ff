"""Stands in for ``givernylocal.turbulence_dataset``: ``from labclient.jhtdb.turbulence_dataset import *``."""

from labclient.jhtdb._star import *  # noqa: F403 - the point of this module
from labclient.jhtdb._star import __all__  # noqa: F401
