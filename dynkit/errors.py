"""Exceptions raised by dynkit. Every error a user can cause is a ``DynkitError``."""

__all__ = [
    "CheckpointError", "DynkitError", "InvalidArgumentError", "MissingDependencyError",
    "ShapeMismatchError", "UnsupportedLayerError", "require",
]


class DynkitError(Exception):
    """Base class of every error dynkit raises on bad input.

    Example:
        >>> issubclass(InvalidArgumentError, DynkitError)
        True
    """


class CheckpointError(DynkitError):
    """A checkpoint file is missing, truncated, corrupt, of a foreign format, or unsafe.

    Example:
        >>> import dynkit as dk
        >>> try:
        ...     dk.load_checkpoint("no/such/file.safetensors")
        ... except CheckpointError as exc:
        ...     print(type(exc).__name__)
        CheckpointError
    """


class ShapeMismatchError(DynkitError, ValueError):
    """Arrays whose shapes do not fit what an architecture or a function expects.

    Also a ``ValueError``.

    Example:
        >>> issubclass(ShapeMismatchError, ValueError)
        True
    """


class UnsupportedLayerError(DynkitError, NotImplementedError):
    """A layer that an analysis (path-norm, infinite-width kernel, ...) does not cover.

    Also a ``NotImplementedError``.

    Example:
        >>> issubclass(UnsupportedLayerError, NotImplementedError)
        True
    """


class MissingDependencyError(DynkitError, ImportError):
    """An optional dependency (e.g. PyTorch) is needed for this call but is not installed.

    Also an ``ImportError``.

    Example:
        >>> issubclass(MissingDependencyError, ImportError)
        True
    """


class InvalidArgumentError(DynkitError, ValueError):
    """An argument outside its documented domain (NaN data, unknown name, bad range).

    Also a ``ValueError``.

    Example:
        >>> from dynkit.losses import loss_fn
        >>> try:
        ...     loss_fn("hinge", None)
        ... except InvalidArgumentError as exc:
        ...     print(exc)
        loss must be one of ('cross_entropy', 'mse'), got 'hinge'
    """


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise a ``MissingDependencyError`` saying how to get it.

    Args:
        module: the module to import (e.g. ``"torch"``).
        extra: the ``dynkit`` extra that installs it (``pip install 'dynkit[extra]'``).
        purpose: what needs it, for the message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed.

    Example:
        >>> require("json", "core", "this example").__name__
        'json'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the optional dependency '{module}', which is not installed. "
            f"Install it with: pip install 'dynkit[{extra}]'"
        ) from exc
