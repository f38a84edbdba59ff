"""What ``from givernylocal.turbulence_* import *`` puts in a notebook: the calls, the gizmos and the
libraries givernylocal imports at its top (its modules have no ``__all__``, so notebooks use them freely)."""

import csv
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

try:
    import matplotlib.pyplot as plt
    import pandas as pd
    import plotly.graph_objects as go
    import xarray as xr
    from plotly.subplots import make_subplots
except ImportError as exc:  # pragma: no cover - depends on the install
    from labclient._extras import MissingExtra

    raise MissingExtra(
        f"labclient.jhtdb's notebook imports need {exc.name}: pip install \"labservice-client[jhtdb]\""
    ) from exc

from labclient.jhtdb import (
    JHTDB_TESTING_TOKEN,
    contour_plot,
    cutout_values,
    getCutout,
    getData,
    turb_dataset,
    write_cutout_hdf5_and_xmf_files,
    write_interpolation_tsv_file,
)

__all__ = [
    "JHTDB_TESTING_TOKEN",
    "contour_plot",
    "csv",
    "cutout_values",
    "getCutout",
    "getData",
    "go",
    "json",
    "make_subplots",
    "math",
    "np",
    "os",
    "pathlib",
    "pd",
    "plt",
    "sys",
    "time",
    "turb_dataset",
    "write_cutout_hdf5_and_xmf_files",
    "write_interpolation_tsv_file",
    "xr",
]
