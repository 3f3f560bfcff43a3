"""Exceptions raised by dynkit. Every error a user can cause is a ``DynkitError``."""

__all__ = [
    "CheckpointError", "DynkitError", "InvalidArgumentError", "MissingDependencyError",
    "ShapeMismatchError", "UnsupportedLayerError", "require",
]


class DynkitError(Exception):
    """Base class of every error dynkit raises on bad input."""


class CheckpointError(DynkitError):
    """A checkpoint file is missing, truncated, corrupt, of a foreign format, or unsafe."""


class ShapeMismatchError(DynkitError, ValueError):
    """Arrays whose shapes do not fit what an architecture or a function expects."""


class UnsupportedLayerError(DynkitError, NotImplementedError):
    """A layer that an analysis (path-norm, infinite-width kernel, ...) does not cover."""


class MissingDependencyError(DynkitError, ImportError):
    """An optional dependency (e.g. PyTorch) is needed for this call but is not installed."""


class InvalidArgumentError(DynkitError, ValueError):
    """An argument outside its documented domain (NaN data, unknown name, bad range)."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise a ``MissingDependencyError`` saying how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the optional dependency '{module}', which is not installed. "
            f"Install it with: pip install 'dynkit[{extra}]'"
        ) from exc
