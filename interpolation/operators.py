"""Spatial operators: which derivatives each needs, output shapes, and output component names."""

from __future__ import annotations

import numpy as np

from labservice.errors import InvalidInput, unknown
from labservice.interpolation import derived

OPERATORS = ("field", "gradient", "hessian", "laplacian")
HESSIAN_PAIRS = ("xx", "xy", "xz", "yy", "yz", "zz")
_NDER = {"field": 0, "gradient": 1, "hessian": 2, "laplacian": 2}


def all_operators() -> tuple[str, ...]:
    """Operators plus derived quantities: everything ``Dataset.points(operator=...)`` accepts."""
    return OPERATORS + tuple(derived.DERIVED)


def derivative_order(operator: str) -> int:
    """0, 1 or 2: the highest derivative the kernels must produce for ``operator``."""
    if operator in _NDER:
        return _NDER[operator]
    if operator in derived.DERIVED:
        return 1
    raise unknown("operator", operator, all_operators(), error=InvalidInput)


def finish(values: np.ndarray, operator: str) -> np.ndarray:
    """Turn kernel output (..., ncomp, 1 | 3 | 6) into the operator's result.

    field: (..., ncomp); gradient: (..., ncomp, 3) as d/dx, d/dy, d/dz; hessian: (..., ncomp, 6) as
    xx, xy, xz, yy, yz, zz; laplacian: (..., ncomp).
    """
    if operator == "field":
        return values[..., 0]
    if operator in ("gradient", "hessian"):
        return values
    if operator == "laplacian":
        return values[..., 0] + values[..., 3] + values[..., 5]
    raise unknown("operator", operator, OPERATORS, error=InvalidInput)


# Output columns per input component, in C order of the trailing axes; "{c}" is the component's name.
_COLUMNS = {
    "field": ("{c}",),
    "gradient": tuple(f"d{{c}}/d{x}" for x in "xyz"),
    "hessian": tuple(f"d2{{c}}/d{p[0]}d{p[1]}" for p in HESSIAN_PAIRS),
    "laplacian": ("lap({c})",),
}


def component_names(components: list[str], operator: str, variable: str = "") -> list[str]:
    """Names of the output columns, e.g. ``["dux/dx", "dux/dy", ...]`` for a velocity gradient.

    The trailing axes of the result flatten, in C order, to this list. Derived quantities have fixed
    names (``["wx", "wy", "wz"]`` for vorticity) whatever the components. ``variable`` is unused; it
    stays for callers that pass it.
    """
    if operator in _COLUMNS:
        return [col.format(c=c) for c in components for col in _COLUMNS[operator]]
    if operator in derived.DERIVED:
        return list(derived.DERIVED[operator])
    raise unknown("operator", operator, all_operators(), error=InvalidInput)


def output_width(operator: str, ncomp: int) -> int:
    """Output values per point of ``operator`` on an ``ncomp``-component variable (the length of
    :func:`component_names`), e.g. 9 for the gradient of a velocity, 6 for its strain rate."""
    if operator in _COLUMNS:
        return int(ncomp) * len(_COLUMNS[operator])
    if operator in derived.DERIVED:
        return len(derived.DERIVED[operator])
    raise unknown("operator", operator, all_operators(), error=InvalidInput)
