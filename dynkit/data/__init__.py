"""Data sets as numpy train/test splits: synthetic generators, scikit-learn digits, MNIST-1D,
and user arrays. Nothing is downloaded.

``load(name, seed=0, **kwargs)`` builds a registered source; ``names()`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dynkit.data.dataset import Dataset, from_arrays, from_npz
from dynkit.data.denoise import denoise
from dynkit.data.real import digits, mnist1d, standardize
from dynkit.data.synthetic import (
    circle,
    gaussian_mixture,
    modular_arithmetic,
    sparse_parity,
    sphere,
    teacher_student,
    xor,
    zonal_harmonic,
)
from dynkit.errors import InvalidArgumentError

#: Source name -> loader ``f(*, seed, **kwargs) -> Dataset``.
SOURCES: dict[str, Callable[..., Dataset]] = {
    "gaussian_mixture": gaussian_mixture,
    "teacher_student": teacher_student,
    "xor": xor,
    "circle": circle,
    "sphere": sphere,
    "sparse_parity": sparse_parity,
    "modular_arithmetic": modular_arithmetic,
    "digits": digits,
    "mnist1d": mnist1d,
    "denoise": denoise,
}


def names() -> list[str]:
    """Names accepted by :func:`load`, sorted.

    Example:
        >>> "digits" in names() and "gaussian_mixture" in names()
        True
    """
    return sorted(SOURCES)


def load(name: str, *, seed: int = 0, dtype=np.float32, **kwargs) -> Dataset:
    """Build the data set ``name`` (see :func:`names`), deterministic given ``seed``.

    Args:
        name: a key of ``SOURCES``.
        seed: random seed.
        dtype: dtype of the inputs (and regression targets).
        **kwargs: arguments of the source's generator (sizes, dimensions, ...; see its
            docstring).

    Returns:
        The ``Dataset``.

    Raises:
        InvalidArgumentError: an unknown name or invalid arguments.

    Example:
        >>> d = load("gaussian_mixture", n_train=6, n_test=2)
        >>> d.x_train.dtype, d.x_train.shape
        (dtype('float32'), (6, 2))
    """
    if name not in SOURCES:
        raise InvalidArgumentError(f"unknown data set {name!r}; known: {', '.join(names())} "
                                   "(or build one with dynkit.data.from_arrays/from_npz)")
    try:
        d = SOURCES[name](seed=seed, **kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(f"invalid arguments for data set {name!r}: {exc}") from exc
    cast = (lambda y: y.astype(dtype)) if d.task == "regression" else (lambda y: y)
    return Dataset(d.name, d.x_train.astype(dtype), cast(d.y_train), d.x_test.astype(dtype),
                   cast(d.y_test), d.num_classes, d.task, d.meta)


__all__ = [
    "SOURCES", "Dataset", "circle", "denoise", "digits", "from_arrays", "from_npz", "gaussian_mixture",
    "load", "mnist1d", "modular_arithmetic", "names", "sparse_parity", "sphere", "standardize",
    "teacher_student", "xor", "zonal_harmonic",
]
