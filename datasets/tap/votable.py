"""Query results as VOTable (with TAP_SCHEMA's units, UCDs and descriptions), CSV or Parquet, and the TAP
error document (a VOTable whose QUERY_STATUS is ERROR).

An answer cut at MAXREC carries ``QUERY_STATUS=OVERFLOW`` after its table, as TAP 1.1 (section 4.9)
specifies; a complete one carries ``OK``.
"""

from __future__ import annotations

import io
import warnings
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from labservice.datasets.tap.schema import Column
from labservice.errors import InvalidInput

FORMATS = {
    "votable": "application/x-votable+xml",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
SUFFIXES = {"votable": "xml", "csv": "csv", "parquet": "parquet"}
# RESPONSEFORMAT / FORMAT spellings TAP clients send -> ours (DALI 1.1 section 3.4.1)
_ALIASES = {
    "votable": "votable", "application/x-votable+xml": "votable", "text/xml": "votable",
    "votable/td": "votable", "application/x-votable+xml;serialization=tabledata": "votable",
    "csv": "csv", "text/csv": "csv", "text/csv;header=present": "csv",
    "parquet": "parquet", "application/vnd.apache.parquet": "parquet", "application/parquet": "parquet",
}


def output_format(value: str | None) -> str:
    """Our format name for a FORMAT/RESPONSEFORMAT value (default VOTable)."""
    if value is None or not value.strip():
        return "votable"
    key = value.strip().lower().replace(" ", "")
    if key not in _ALIASES:
        raise InvalidInput(f"unknown FORMAT {value!r}; use votable, csv or parquet")
    return _ALIASES[key]


def _status_info(value: str, text: str = "") -> str:
    return f'<INFO name="QUERY_STATUS" value="{value}">{escape(text)}</INFO>'


def error_document(message: str) -> bytes:
    """A TAP error document: a VOTable with QUERY_STATUS=ERROR and the message."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        f' <RESOURCE type="results">\n  {_status_info("ERROR", message)}\n </RESOURCE>\n</VOTABLE>\n'
    ).encode()


def _votable(frame: pd.DataFrame, columns: dict[str, Column], overflow: bool, query: str) -> bytes:
    from astropy.io.votable.tree import Info, Resource, VOTableFile
    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # W03: an expression's name made into an ID (SELECT 1.5 -> _1.5)
        vot = VOTableFile.from_table(Table.from_pandas(frame))
    resource: Resource = vot.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    resource.infos.append(Info(name="QUERY", value=query[:2000]))
    for field in vot.get_first_table().fields:
        col = columns.get(field.name.lower())
        if col is None:
            continue
        if col.unit:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Msun/h" is not a VOUnit astropy knows: kept as written
                field.unit = col.unit
        field.ucd = col.ucd or None
        if col.description:
            field.description = col.description
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vot.to_xml(buf, tabledata_format="tabledata")
    text = buf.getvalue()
    if overflow:  # TAP 1.1: the OVERFLOW status goes after the table
        end = text.rindex(b"</RESOURCE>")
        text = text[:end] + _status_info("OVERFLOW", "the result was cut at MAXREC rows").encode() + b"\n" + text[end:]
    return text


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns the writers take: unique names (a join may repeat one: ``id``, ``id_2``), numbers where the
    values are numbers or NULL (NULL becomes NaN, masked in VOTable), text elsewhere (NULL as empty)."""
    names, seen = [], {}
    for name in map(str, frame.columns):
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    out = pd.DataFrame({n: frame.iloc[:, i] for i, n in enumerate(names)}, index=frame.index)
    for name in out.columns:
        col = out[name]
        if pd.api.types.is_extension_array_dtype(col.dtype) and not isinstance(col.dtype, pd.StringDtype):
            col = col.astype(object).where(col.notna(), None)
        if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
            values = col.astype(object)
            if values.isna().all():
                out[name] = np.full(len(values), np.nan)
                continue
            try:
                out[name] = pd.to_numeric(values)
            except (TypeError, ValueError):
                out[name] = values.where(values.notna(), "").astype(str)
    return out


def encode(frame: pd.DataFrame, fmt: str, columns: dict[str, Column], overflow: bool, query: str = "") -> bytes:
    """Rows in ``fmt`` (votable, csv or parquet); ``columns`` maps lower-case names to their metadata."""
    frame = _plain(frame)
    if fmt == "votable":
        return _votable(frame, columns, overflow, query)
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()
