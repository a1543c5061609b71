"""Core types shared by every stage: Volume, geometry conventions, label registry, errors, configuration,
summary and provenance records, atomic writing. Imports no other legmri package."""

from pipeline.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    BadInputError,
    BundleError,
    ConfigError,
    InternalError,
    LegMRIError,
    UsageError,
)
from pipeline.core.geometry import SIDES, Side, lps_to_ras_affine, side_of_world_x
from pipeline.core.volume import Volume

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_OK", "EXIT_USAGE", "BadInputError", "BundleError", "ConfigError",
    "InternalError", "LegMRIError", "UsageError", "SIDES", "Side", "lps_to_ras_affine", "side_of_world_x", "Volume",
]
