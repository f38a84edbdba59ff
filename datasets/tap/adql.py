"""ADQL to DuckDB SQL: parse and translate with queryparser (ADQL -> PostgreSQL, which DuckDB runs), then
check every table and column against TAP_SCHEMA so a typo answers with the close matches.

Refused before parsing: ADQL's sky-geometry functions. A periodic simulation box has Cartesian comoving
positions, no celestial sphere, so CONTAINS, POINT, CIRCLE and the others have nothing to measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labservice.datasets.tap.schema import TapSchema
from labservice.errors import InvalidInput, suggest

GEOMETRY = ("CONTAINS", "INTERSECTS", "POINT", "CIRCLE", "BOX", "POLYGON", "REGION", "AREA", "CENTROID",
            "COORD1", "COORD2", "COORDSYS", "DISTANCE")
_GEOMETRY = re.compile(r"\b(" + "|".join(GEOMETRY) + r")\s*\(", re.IGNORECASE)
_STRINGS = re.compile(r"'(?:[^']|'')*'")
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
MAX_ADQL_CHARS = 20_000


class AdqlError(InvalidInput):
    """The query is not ADQL this service can run; the message says what to change."""

    code = "invalid_adql"


@dataclass(frozen=True)
class Translation:
    """The DuckDB SQL of a query and the qualified tables it reads."""

    adql: str
    sql: str
    tables: tuple[str, ...]


def check_geometry(adql: str) -> None:
    """Refuse ADQL's sky-geometry functions (outside string literals and quoted names)."""
    bare = _QUOTED.sub('""', _STRINGS.sub("''", adql))
    found = _GEOMETRY.search(bare)
    if found:
        raise AdqlError(
            f"ADQL's sky-geometry function {found.group(1).upper()} does not apply here: a periodic simulation box "
            "has Cartesian comoving positions, not a celestial sphere (no RA/Dec, no POINT, CIRCLE or CONTAINS). "
            "Select on the x, y, z columns instead, e.g. WHERE x BETWEEN 10 AND 20 AND y BETWEEN 0 AND 5"
        )


def _syntax_message(exc: Exception) -> str:
    spots = getattr(exc, "syntax_errors", None) or (exc.args[0] if exc.args else None)
    if isinstance(spots, list) and spots and isinstance(spots[0], tuple):
        line, col, near = spots[0][:3]
        return f"ADQL syntax error at line {line}, column {col + 1}, near {near!r}; check the query there"
    return f"ADQL does not parse: {exc}"


def translate(adql: str, schema: TapSchema) -> Translation:
    """Translate one ADQL SELECT to DuckDB SQL over ``schema``'s tables.

    Raises
    ------
    AdqlError
        For a sky-geometry function, a syntax error (with line, column and token), an unqualified or
        unknown table, or an unknown column (with close matches).
    """
    from queryparser.adql import ADQLQueryTranslator
    from queryparser.exceptions import QueryError, QuerySyntaxError
    from queryparser.postgresql import PostgreSQLQueryProcessor

    if not isinstance(adql, str) or not adql.strip():
        raise AdqlError("QUERY is empty; send an ADQL SELECT, e.g. SELECT TOP 10 * FROM cosmo64.halos")
    if len(adql) > MAX_ADQL_CHARS:
        raise AdqlError(f"the query has {len(adql)} characters, over {MAX_ADQL_CHARS}; shorten it")
    check_geometry(adql)
    try:
        sql = ADQLQueryTranslator(adql).to_postgresql()
    except QuerySyntaxError as exc:
        raise AdqlError(_syntax_message(exc)) from None
    except Exception as exc:  # the translator raises plain errors on odd input: all are the query's fault
        raise AdqlError(f"ADQL does not parse: {type(exc).__name__}: {exc}") from None
    if not sql.strip():
        raise AdqlError("the query translates to nothing; send one ADQL SELECT statement")
    proc = PostgreSQLQueryProcessor()
    try:
        proc.set_query(sql)
        proc.process_query()
    except QueryError as exc:
        text = str(exc)
        if "schema" in text.lower():
            raise AdqlError(
                "qualify every table with its simulation, e.g. cosmo64.halos; tables: " + ", ".join(schema.tables())
            ) from None
        raise AdqlError(f"ADQL query error: {text}") from None
    except Exception:  # the checker cannot follow this query: DuckDB's binder still names unknown columns
        return Translation(adql, sql, ())
    tables = []
    for sch, name in proc.tables:
        qualified = f"{sch}.{name}" if sch else name
        found = schema.find(qualified)
        if found is None:
            raise AdqlError(
                f"unknown table {qualified!r}.{suggest(qualified, schema.tables())} Tables: "
                + ", ".join(schema.tables())
            )
        tables.append(found)
    for sch, name, column in proc.columns:
        found = schema.find(f"{sch}.{name}") if sch and name else None
        if found is None or column in (None, "*"):
            continue
        names = [c.name for c in schema.columns[found]]
        if column.lower() not in {n.lower() for n in names}:
            raise AdqlError(
                f"unknown column {column!r} in {found}.{suggest(column, names)} Columns: {', '.join(names)}"
            )
    return Translation(adql, sql, tuple(dict.fromkeys(tables)))
