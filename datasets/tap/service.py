"""The TAP service over a set of simulations: run ADQL (sync or from a job), and the VOSI documents.

One :class:`TapService` per server (and one per worker process for async jobs, built from the simulation
folders). Its DuckDB (:class:`~labservice.datasets.tap.engine.TapEngine`) is built on the first query.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from labservice.datasets.tap import adql, votable
from labservice.datasets.tap.schema import TAP, Column, TapSchema
from labservice.errors import InvalidInput

VOSI_AVAILABILITY = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
VOSI_CAPABILITIES = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
VOSI_TABLES = "http://www.ivoa.net/xml/VOSITables/v1.0"
VR = "http://www.ivoa.net/xml/VOResource/v1.0"
VS = "http://www.ivoa.net/xml/VODataService/v1.1"
TR = "http://www.ivoa.net/xml/TAPRegExt/v1.0"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ESA = "http://esa.int/xml/EsaTapPlus"


@dataclass
class QueryResult:
    body: bytes
    media_type: str
    rows: int
    overflow: bool


@dataclass(frozen=True)
class TapLimits:
    """Limits of every TAP query: the row cap (MAXREC's ceiling), seconds, DuckDB memory and threads."""

    max_rows: int = 100_000
    timeout: float = 10.0
    memory_limit: str = "256MB"
    threads: int = 1


def parse_maxrec(value: str | int | None, cap: int) -> int:
    """MAXREC as an int in [0, cap] (a larger request is capped: the answer then says OVERFLOW if cut)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return cap
    try:
        n = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"MAXREC must be a whole number >= 0; got {str(value)[:40]!r}") from None
    if n < 0:
        raise InvalidInput(f"MAXREC must be >= 0; got {n}")
    return min(n, cap)


class TapService:
    """TAP over simulations.

    Parameters
    ----------
    sims : mapping
        Simulation id -> an opened :class:`~labservice.datasets.simulation.Simulation`.
    limits : TapLimits
    """

    def __init__(self, sims: Mapping[str, Any], limits: TapLimits | None = None) -> None:
        self.limits = limits or TapLimits()
        self.paths = {s: str(sim.path) for s, sim in sims.items()}
        frames = {s: (sim.halos.head(0), sim.snapshots()) for s, sim in sims.items()}
        self._tables = {s: (Path(sim.path) / "halos.parquet", frames[s][1]) for s, sim in sims.items()}
        self.schema = TapSchema(frames)
        self._engine: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, paths: Mapping[str, str], limits: TapLimits) -> TapService:
        """Open the simulation folders (on a job worker)."""
        from labservice.datasets.simulation import Simulation

        return cls({s: Simulation(p) for s, p in paths.items()}, limits)

    @property
    def engine(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from labservice.datasets.tap.engine import TapEngine

                    lim = self.limits
                    self._engine = TapEngine(self._tables, self.schema.frames(), lim.max_rows, lim.timeout,
                                             lim.memory_limit, lim.threads)
        return self._engine

    def translate(self, query: str) -> adql.Translation:
        return adql.translate(query, self.schema)

    def _columns(self, tables: tuple[str, ...]) -> dict[str, Column]:
        out: dict[str, Column] = {}
        for t in tables:
            for c in self.schema.columns[t]:
                out.setdefault(c.name.lower(), c)
        return out

    def run(self, query: str, maxrec: str | int | None = None, fmt: str | None = None,
            lang: str | None = None) -> QueryResult:
        """Run one ADQL query; raises LabError subclasses (the web layer writes them as error documents)."""
        check_lang(lang)
        kind = votable.output_format(fmt)
        cap = parse_maxrec(maxrec, self.limits.max_rows)
        tr = self.translate(query)
        result = self.engine.query(tr.sql, truncate=True)
        frame = result.frame
        overflow = result.truncated or len(frame) > cap
        frame = frame.iloc[:cap]
        body = votable.encode(frame, kind, self._columns(tr.tables), overflow, query)
        return QueryResult(body, votable.FORMATS[kind], len(frame), overflow)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # -- VOSI --------------------------------------------------------------------------------------
    def tables_xml(self, only: str | None = None) -> bytes:
        """The VOSI tableset (every schema, table and column with unit, UCD and description)."""
        out = ['<?xml version="1.0" encoding="UTF-8"?>']
        if only is not None:
            found = self.schema.find(only)
            if found is None:
                from labservice.errors import unknown

                raise unknown("table", only, self.schema.tables())
            out.append(f'<vosi:table xmlns:vosi="{VOSI_TABLES}" xmlns:vs="{VS}" xmlns:xsi="{XSI}" xmlns:esatapplus="{ESA}">')
            out += _table_body(found, self.schema)
            out.append("</vosi:table>")
            return "\n".join(out).encode()
        out.append(f'<vosi:tableset xmlns:vosi="{VOSI_TABLES}" xmlns:vs="{VS}" xmlns:xsi="{XSI}" xmlns:esatapplus="{ESA}">')
        for sch in [*self.schema.sims, TAP]:
            out.append(f"<schema><name>{escape(sch)}</name>")
            for t in self.schema.tables():
                if self.schema.schema_of(t) == sch:
                    out.append("<table>")
                    out += _table_body(t, self.schema)
                    out.append("</table>")
            out.append("</schema>")
        out.append("</vosi:tableset>")
        return "\n".join(out).encode()

    def capabilities_xml(self, base: str, execution_duration: float) -> bytes:
        """VOSI capabilities: TAP 1.1 (ADQL 2.0, VOTable/CSV/Parquet, the row cap, the async jobs' execution
        duration: their default and ceiling, which pyvo also waits for), availability, tables."""
        base = escape(base.rstrip("/"))
        fmts = "".join(
            f"<outputFormat><mime>{escape(m)}</mime><alias>{k}</alias></outputFormat>"
            for k, m in votable.FORMATS.items()
        )
        cap = self.limits.max_rows
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="{VOSI_CAPABILITIES}" xmlns:vr="{VR}" xmlns:vs="{VS}" xmlns:tr="{TR}" xmlns:xsi="{XSI}">
<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">
<interface xsi:type="vs:ParamHTTP" role="std" version="1.1"><accessURL use="base">{base}</accessURL></interface>
<language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>
<description>ADQL 2.0 without the sky-geometry functions (a periodic box has no sky)</description></language>
{fmts}
<retentionPeriod><default>604800</default></retentionPeriod>
<executionDuration><default>{int(execution_duration)}</default><hard>{int(execution_duration)}</hard></executionDuration>
<outputLimit><default unit="row">{cap}</default><hard unit="row">{cap}</hard></outputLimit>
</capability>
<capability standardID="ivo://ivoa.net/std/VOSI#capabilities">
<interface xsi:type="vs:ParamHTTP"><accessURL use="full">{base}/capabilities</accessURL></interface></capability>
<capability standardID="ivo://ivoa.net/std/VOSI#availability">
<interface xsi:type="vs:ParamHTTP"><accessURL use="full">{base}/availability</accessURL></interface></capability>
<capability standardID="ivo://ivoa.net/std/VOSI#tables-1.1">
<interface xsi:type="vs:ParamHTTP" version="1.1"><accessURL use="full">{base}/tables</accessURL></interface></capability>
</vosi:capabilities>
""".encode()


def availability_xml(available: bool, note: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<vosi:availability xmlns:vosi="{VOSI_AVAILABILITY}">'
        f"<vosi:available>{'true' if available else 'false'}</vosi:available>"
        f"<vosi:note>{escape(note)}</vosi:note></vosi:availability>\n"
    ).encode()


def check_lang(lang: str | None) -> None:
    if lang is not None and lang.strip() and lang.strip().upper().split("-")[0] != "ADQL":
        raise InvalidInput(f"LANG {lang[:40]!r} is not supported; this service speaks LANG=ADQL")


def _table_body(table: str, schema: TapSchema) -> list[str]:
    out = [f"<name>{escape(table)}</name>", f"<description>{escape(schema.descriptions[table])}</description>"]
    for c in schema.columns[table]:
        out.append('<column esatapplus:flags="0">')  # astroquery's TapPlus table parser requires it
        out.append(f"<name>{escape(c.name)}</name>")
        if c.description:
            out.append(f"<description>{escape(c.description)}</description>")
        if c.unit:
            out.append(f"<unit>{escape(c.unit)}</unit>")
        if c.ucd:
            out.append(f"<ucd>{escape(c.ucd)}</ucd>")
        size = f' arraysize="{c.arraysize}"' if c.arraysize else ""
        out.append(f'<dataType xsi:type="vs:VOTableType"{size}>{c.datatype}</dataType>')
        if c.indexed:
            out.append("<flag>indexed</flag>")
        out.append("</column>")
    for _key_id, frm, target, desc, fc, tc in schema.keys():
        if frm == table:
            out.append(f"<foreignKey><targetTable>{escape(target)}</targetTable><fkColumn><fromColumn>{fc}"
                       f"</fromColumn><targetColumn>{tc}</targetColumn></fkColumn>"
                       f"<description>{escape(desc)}</description></foreignKey>")
    return out
