"""JHTDB's Python interface (givernylocal 3.x) on top of labservice, so JHTDB notebooks port by their imports.

A givernylocal notebook starts with::

    from givernylocal.turbulence_dataset import *
    from givernylocal.turbulence_toolkit import *

Here those lines read::

    from labclient.jhtdb.turbulence_dataset import *
    from labclient.jhtdb.turbulence_toolkit import *

and bring the same names: ``turb_dataset``, ``getData``, ``getCutout``, the gizmos
(``write_interpolation_tsv_file``, ``write_cutout_hdf5_and_xmf_files``, ``cutout_values``, ``contour_plot``)
and the libraries the notebooks use without importing them (``np``, ``pd``, ``plt``, ``go``, ``make_subplots``,
``math``, ...). Those come with ``pip install "labservice-client[jhtdb]"``.

``from labclient.jhtdb import getData, getCutout, turb_dataset`` needs only numpy, pandas and xarray.
As in givernylocal, cutout ranges are 1-based and inclusive, in the order x, y, z, t.
"""

from labclient.jhtdb.core import (
    JHTDB_TESTING_TOKEN,
    NO_OPTION,
    TurbDataset,
    getCutout,
    getData,
    turb_dataset,
)
from labclient.jhtdb.gizmos import (
    contour_plot,
    cutout_values,
    write_cutout_hdf5_and_xmf_files,
    write_interpolation_tsv_file,
)

__all__ = [
    "JHTDB_TESTING_TOKEN",
    "NO_OPTION",
    "TurbDataset",
    "contour_plot",
    "cutout_values",
    "getCutout",
    "getData",
    "turb_dataset",
    "write_cutout_hdf5_and_xmf_files",
    "write_interpolation_tsv_file",
]
