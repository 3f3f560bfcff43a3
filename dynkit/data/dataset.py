"""``Dataset``: a train/test split held as numpy arrays, plus builders from user arrays.

Conventions: inputs ``x`` have shape ``(n, *input_shape)`` (images channels-last, NHWC);
classification labels ``y`` are integers in ``[0, num_classes)`` of shape ``(n,)``; regression
targets have shape ``(n, k)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynkit.errors import InvalidArgumentError
from dynkit.validation import check_finite

__all__ = [
    "TASKS",
    "Dataset",
    "from_arrays",
    "from_npz",
]

TASKS = ("classification", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named train/test split.

    ``num_classes`` is ``None`` for regression. ``meta`` holds what a generator drew to make
    the data (teacher weights, relevant bits, class means), so that it can be reproduced.

    Attributes:
        name: the data set's name.
        x_train, y_train, x_test, y_test: the splits (inputs ``(n, ...)``; integer labels
            ``(n,)``, float targets ``(n, k)`` or target images ``(n, ...)``).
        num_classes: number of classes, ``None`` for regression.
        task: ``"classification"`` or ``"regression"``.
        meta: what the generator drew.
        input_shape: ``x_train.shape[1:]`` (a property).

    Raises:
        InvalidArgumentError: inconsistent shapes, NaN values or labels out of range.

    Example:
        >>> d = Dataset("toy", np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.zeros((2, 2)),
        ...             np.array([0, 1]), 2, "classification")
        >>> d.input_shape, [x.shape for x, _ in d.batches(batch_size=3, shuffle=False)]
        ((2,), [(3, 2), (1, 2)])
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    task: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _validate(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``"train"`` or ``"test"``."""
        if split not in ("train", "test"):
            raise InvalidArgumentError(f"split must be 'train' or 'test', got {split!r}")
        return (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)

    def batches(
        self, split: str = "train", batch_size: int = 128, seed=0, shuffle: bool = True,
        drop_last: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over ``(x, y)`` mini-batches of one split.

        The order is ``numpy.random.default_rng(seed).permutation(n)`` when ``shuffle``
        (``seed`` may be an int or a tuple of ints, e.g. ``(seed, epoch)``), else ``0..n-1``.
        ``drop_last`` drops a final batch smaller than ``batch_size``."""
        if int(batch_size) < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
        x, y = self.split(split)
        n = len(x)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]


def _validate(d: Dataset) -> None:
    if d.task not in TASKS:
        raise InvalidArgumentError(f"dataset {d.name!r}: task must be one of {TASKS}, "
                                   f"got {d.task!r}")
    for split in ("train", "test"):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise InvalidArgumentError(f"dataset {d.name!r}: x_{split} and y_{split} must be "
                                       f"numpy arrays, got {type(x).__name__}, "
                                       f"{type(y).__name__}")
        if x.ndim < 2 and len(x):
            raise InvalidArgumentError(f"dataset {d.name!r}: x_{split} must have shape "
                                       f"(n, *input_shape), got {x.shape}")
        if len(x) != len(y):
            raise InvalidArgumentError(f"dataset {d.name!r}: x_{split} has {len(x)} samples "
                                       f"but y_{split} has {len(y)}; they must match")
        _check_finite(x, f"dataset {d.name!r}: x_{split}")
        _check_finite(y, f"dataset {d.name!r}: y_{split}")
        if d.task == "classification" and len(y):
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise InvalidArgumentError(f"dataset {d.name!r}: classification labels "
                                           f"y_{split} must be integers of shape (n,), got "
                                           f"{y.dtype} {y.shape}")
            if d.num_classes is None or y.min() < 0 or y.max() >= d.num_classes:
                raise InvalidArgumentError(f"dataset {d.name!r}: labels y_{split} must lie in "
                                           f"[0, num_classes={d.num_classes}), found "
                                           f"[{y.min()}, {y.max()}]")
    if d.x_train.shape[1:] != d.x_test.shape[1:] and len(d.x_test):
        raise InvalidArgumentError(f"dataset {d.name!r}: x_train has sample shape "
                                   f"{d.x_train.shape[1:]} but x_test has {d.x_test.shape[1:]}")


def _check_finite(a: np.ndarray, what: str) -> None:
    check_finite(what, a, "; clean or drop them before building a dataset")
    if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
        raise InvalidArgumentError(f"{what} must be numeric, got dtype {a.dtype}")


def _infer_task(y: np.ndarray, task: str | None) -> str:
    if task is not None:
        return task
    return "classification" if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) else "regression"


def _as_targets(y: np.ndarray, task: str) -> np.ndarray:
    if task == "regression" and y.ndim == 1:
        return y.reshape(-1, 1)
    return y


def from_arrays(
    x, y, *, test_fraction: float = 0.2, seed: int = 0, name: str = "arrays",
    task: str | None = None, num_classes: int | None = None,
) -> Dataset:
    """A ``Dataset`` from arrays ``x`` (n, ...) and ``y`` (n,) or (n, k), randomly split.

    The test set is the first ``round(test_fraction * n)`` indices of
    ``numpy.random.default_rng(seed).permutation(n)``. ``task`` defaults to classification
    for integer 1-D ``y`` (``num_classes`` defaults to ``max(y) + 1``), regression otherwise
    (1-D targets become ``(n, 1)``).

    Args:
        x: inputs ``(n, ...)``.
        y: labels ``(n,)`` or targets ``(n, k)``.
        test_fraction: fraction in the test set, in ``[0, 1)``.
        seed: seed of the split.
        name: the data set's name.
        task: ``"classification"`` or ``"regression"`` (default: inferred from ``y``).
        num_classes: number of classes (default ``max(y) + 1``).

    Returns:
        The ``Dataset``.

    Raises:
        InvalidArgumentError: mismatched lengths, an empty or non-finite input, a bad fraction.

    Example:
        >>> d = from_arrays(np.arange(10.0)[:, None], np.arange(10) % 2, test_fraction=0.2)
        >>> len(d.x_train), len(d.x_test), d.task, d.num_classes
        (8, 2, 'classification', 2)
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise InvalidArgumentError(f"from_arrays: x has {len(x)} samples but y has {len(y)}; "
                                   "they must have the same length")
    if not 0.0 <= test_fraction < 1.0:
        raise InvalidArgumentError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if len(x) < 1:
        raise InvalidArgumentError("from_arrays: x is empty")
    _check_finite(x, f"from_arrays({name!r}): x")
    _check_finite(y, f"from_arrays({name!r}): y")
    task = _infer_task(y, task)
    y = _as_targets(y, task)
    if task == "classification" and num_classes is None:
        num_classes = int(y.max()) + 1
    n_test = round(test_fraction * len(x))
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, x[train], y[train], x[test], y[test],
                   num_classes if task == "classification" else None, task)


def from_npz(path, *, name: str | None = None, test_fraction: float = 0.2, seed: int = 0,
             task: str | None = None, num_classes: int | None = None) -> Dataset:
    """A ``Dataset`` from an ``.npz`` file holding ``x_train, y_train, x_test, y_test``, or
    ``x, y`` (then split as in ``from_arrays``). Loaded with ``allow_pickle=False``.

    Args:
        path: the ``.npz`` file.
        name: the data set's name (default: the file name without suffix).
        test_fraction, seed, task, num_classes: as in :func:`from_arrays`.

    Returns:
        The ``Dataset``.

    Raises:
        InvalidArgumentError: a missing or unreadable file, or missing arrays.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
        >>> np.savez(path, x=np.zeros((5, 3)), y=np.arange(5) % 2)
        >>> d = from_npz(path, test_fraction=0.4)
        >>> d.name, len(d.x_train)
        ('toy', 3)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"from_npz: no such file {path!r}")
    name = name or os.path.splitext(os.path.basename(path))[0]
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as exc:
        raise InvalidArgumentError(f"from_npz: cannot read {path!r} as a numpy .npz archive "
                                   f"without pickle: {exc}") from exc
    split_keys = {"x_train", "y_train", "x_test", "y_test"}
    if split_keys <= arrays.keys():
        y_tr = arrays["y_train"]
        task = _infer_task(y_tr, task)
        y_tr, y_te = _as_targets(y_tr, task), _as_targets(arrays["y_test"], task)
        if task == "classification" and num_classes is None:
            num_classes = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
        return Dataset(name, arrays["x_train"], y_tr, arrays["x_test"], y_te,
                       num_classes if task == "classification" else None, task)
    if {"x", "y"} <= arrays.keys():
        return from_arrays(arrays["x"], arrays["y"], test_fraction=test_fraction, seed=seed,
                           name=name, task=task, num_classes=num_classes)
    raise InvalidArgumentError(f"from_npz: {path!r} has keys {sorted(arrays)}; expected "
                               "x_train, y_train, x_test, y_test or x, y")
