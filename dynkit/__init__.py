"""dynkit: theory and analysis of neural-network training dynamics."""

from dynkit import data, models, registry
from dynkit.checkpoints import Checkpoint, load_checkpoint, load_run, save_checkpoint
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
    "Checkpoint", "CheckpointError", "DynkitError", "InvalidArgumentError",
    "MissingDependencyError", "ShapeMismatchError", "UnsupportedLayerError", "data",
    "load_checkpoint", "load_run", "models", "registry", "save_checkpoint",
]
