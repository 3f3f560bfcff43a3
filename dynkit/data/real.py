"""Small real data sets that need no download: scikit-learn's digits and MNIST-1D."""

from __future__ import annotations

import random

import numpy as np

from dynkit.data.dataset import Dataset
from dynkit.errors import InvalidArgumentError

__all__ = [
    "digits", "mnist1d", "standardize",
]


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise InvalidArgumentError(f"test_fraction must be in (0, 1), got {test_fraction}")


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x - mean) / std`` per feature with the *training* mean and std (features with zero
    training std are only centered).

    Args:
        x_train: ``(n, ...)`` training inputs.
        x_test: test inputs of the same feature shape.

    Returns:
        ``(x_train, x_test)`` standardized.

    Example:
        >>> tr, te = standardize(np.array([[0.0, 1.0], [2.0, 1.0]]), np.array([[1.0, 3.0]]))
        >>> tr.tolist(), te.tolist()
        ([[-1.0, 0.0], [1.0, 0.0]], [[0.0, 2.0]])
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def digits(*, seed: int = 0, test_fraction: float = 0.2, image: bool = False,
           standardize_inputs: bool = True) -> Dataset:
    """scikit-learn's bundled optical digits (UCI; Alpaydin & Kaynak 1998): 1797 8x8 images,
    10 classes, pixels in ``0..16``.

    Pixels are scaled to ``[0, 1]`` (divided by 16), split randomly (test set: the first
    ``round(test_fraction * n)`` of ``default_rng(seed).permutation(n)``) and, by default,
    standardized per pixel with the training mean and std. Inputs are flattened ``(64,)``, or
    ``(8, 8, 1)`` (NHWC) with ``image=True``.

    Args:
        seed: seed of the split.
        test_fraction: fraction in the test set, in ``(0, 1)``.
        image: inputs ``(8, 8, 1)`` instead of ``(64,)``.
        standardize_inputs: standardize with the training statistics.

    Returns:
        A classification ``Dataset`` with 10 classes.

    References:
        Alpaydin & Kaynak 1998, "Optical recognition of handwritten digits" (UCI).

    Example:
        >>> d = digits(image=True)
        >>> d.x_train.shape[1:], len(d.x_train) + len(d.x_test)
        ((8, 8, 1), 1797)
    """
    _check_fraction(test_fraction)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float64) / 16.0
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    x_tr, x_te = x[train], x[test]
    if standardize_inputs:
        x_tr, x_te = standardize(x_tr, x_te)
    if image:
        x_tr, x_te = x_tr.reshape(-1, 8, 8, 1), x_te.reshape(-1, 8, 8, 1)
    return Dataset("digits", x_tr, y[train], x_te, y[test], 10, "classification")


def mnist1d(*, seed: int = 0, num_samples: int = 5000, test_fraction: float = 0.2,
            image: bool = False, **kwargs) -> Dataset:
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated procedurally by the
    ``mnist1d`` package (``mnist1d.data.make_dataset``; nothing is downloaded or cached).

    Ten 1-D digit templates are padded, sheared, scaled, translated and corrupted with
    correlated and i.i.d. noise into sequences of length 40, then standardized over the whole
    set. ``num_samples`` is the total (``num_samples // 10`` per class); ``seed`` replaces the
    package's default seed 42; further ``kwargs`` override ``get_dataset_args()`` fields
    (e.g. ``iid_noise_scale``). Inputs are ``(40,)``, or ``(40, 1)`` (NWC, for 1-D
    convolutions) with ``image=True``. The global ``random``/``numpy.random`` states, which the
    package reseeds, are restored afterwards.

    Args:
        seed: the generator's seed.
        num_samples: total number of sequences (``>= 10``).
        test_fraction: fraction in the test set, in ``(0, 1)``.
        image: inputs ``(40, 1)`` instead of ``(40,)``.
        **kwargs: fields of ``mnist1d.data.get_dataset_args()``.

    Returns:
        A classification ``Dataset`` with 10 classes.

    References:
        Greydanus 2020, "Scaling down deep learning" (arXiv:2011.14439).

    Example:
        >>> d = mnist1d(num_samples=100)
        >>> d.x_train.shape, d.num_classes
        ((80, 40), 10)
    """
    _check_fraction(test_fraction)
    if int(num_samples) < 10:
        raise InvalidArgumentError(f"num_samples must be >= 10 (one per class), got "
                                   f"{num_samples}")
    import mnist1d.data as m1d

    args = m1d.get_dataset_args()
    allowed = set(vars(args)) - {"url", "seed", "num_samples", "train_split"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InvalidArgumentError(f"unknown mnist1d argument(s) {unknown}; known: "
                                   f"{sorted(allowed)}")
    for k, v in dict(kwargs, num_samples=int(num_samples), seed=int(seed),
                     train_split=1.0 - test_fraction).items():
        setattr(args, k, v)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        raw = m1d.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x_tr, x_te = np.asarray(raw["x"], np.float64), np.asarray(raw["x_test"], np.float64)
    if image:
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    y_tr = np.asarray(raw["y"], np.int64)
    y_te = np.asarray(raw["y_test"], np.int64)
    return Dataset("mnist1d", x_tr, y_tr, x_te, y_te, 10, "classification")
