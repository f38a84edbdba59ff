"""Virtual sensors: interpolation, derivatives, time interpolation, particle tracking, filters, thresholds.

Pure numerics over the storage :class:`~labservice.storage.ChunkReader`; nothing here knows about HTTP.
The user-facing entry point is :class:`labservice.facade.Dataset` (``labservice.open_dataset``).
"""

from labservice.interpolation.derived import DERIVED
from labservice.interpolation.engine import Evaluation, PointEvaluator, evaluate_points
from labservice.interpolation.filter import box_filter
from labservice.interpolation.methods import METHODS
from labservice.interpolation.operators import OPERATORS, component_names, output_width
from labservice.interpolation.temporal import TEMPORAL_METHODS, time_weight_matrix, time_weights
from labservice.interpolation.threshold import SCALARS, ThresholdResult, threshold
from labservice.interpolation.tracking import SCHEMES, TrackResult, advect

SPATIAL_METHODS = tuple(METHODS)

__all__ = [
    "DERIVED",
    "METHODS",
    "OPERATORS",
    "SCALARS",
    "SCHEMES",
    "SPATIAL_METHODS",
    "TEMPORAL_METHODS",
    "Evaluation",
    "PointEvaluator",
    "ThresholdResult",
    "TrackResult",
    "advect",
    "box_filter",
    "component_names",
    "evaluate_points",
    "output_width",
    "threshold",
    "time_weight_matrix",
    "time_weights",
]
