"""dynkit: theory and analysis of neural-network training dynamics."""

from dynkit import models
from dynkit.errors import (
    CheckpointError,
    DynkitError,
    InvalidArgumentError,
    MissingDependencyError,
    ShapeMismatchError,
    UnsupportedLayerError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DynkitError", "InvalidArgumentError", "MissingDependencyError",
    "ShapeMismatchError", "UnsupportedLayerError", "models",
]
