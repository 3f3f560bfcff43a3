"""Synthetic data sets of the training-dynamics literature, generated from a seed.

Each generator draws ``n_train + n_test`` i.i.d. samples with ``numpy.random.default_rng(seed)``
(``modular_arithmetic`` enumerates and splits all pairs instead) and returns a ``Dataset`` whose
``meta`` holds what was drawn to define the task (means, teacher weights, relevant bits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import special

from dynkit.data.dataset import Dataset
from dynkit.errors import InvalidArgumentError

__all__ = [
    "circle", "gaussian_mixture", "modular_arithmetic", "sparse_parity", "sphere",
    "teacher_student", "xor", "zonal_harmonic",
]


def _positive(**kw) -> None:
    for k, v in kw.items():
        if int(v) < 1:
            raise InvalidArgumentError(f"{k} must be a positive integer, got {v}")


def _split(name, x, y, n_train, num_classes, task, meta) -> Dataset:
    return Dataset(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   num_classes, task, meta)


def _hypercube(rng, n: int, dim: int) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=(n, dim))


def gaussian_mixture(
    *, seed: int = 0, n_train: int = 1000, n_test: int = 1000, num_classes: int = 3,
    dim: int = 2, separation: float = 3.0, noise: float = 1.0,
) -> Dataset:
    """Isotropic Gaussian mixture: ``y ~ Uniform{0..C-1}``, ``x = mu_y + noise * z``,
    ``z ~ N(0, I_d)``, with class means ``mu_c = separation * u_c`` for ``u_c`` uniform on the
    unit sphere ``S^{d-1}``. ``meta["means"]`` is the ``(C, d)`` matrix of means.

    Args:
        seed: random seed (the data are a deterministic function of it).
        n_train, n_test: sizes of the splits.
        num_classes: ``C``.
        dim: ``d``.
        separation: norm of the class means.
        noise: standard deviation of the isotropic noise.

    Returns:
        A classification ``Dataset``.

    Example:
        >>> d = gaussian_mixture(n_train=6, n_test=4, num_classes=3, dim=2)
        >>> d.x_train.shape, d.num_classes, d.meta["means"].shape
        ((6, 2), 3, (3, 2))
    """
    _positive(n_train=n_train, num_classes=num_classes, dim=dim)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((num_classes, dim))
    means = separation * u / np.linalg.norm(u, axis=1, keepdims=True)
    n = n_train + n_test
    y = rng.integers(0, num_classes, n)
    x = means[y] + noise * rng.standard_normal((n, dim))
    return _split("gaussian_mixture", x, y, n_train, num_classes, "classification",
                  {"means": means})


def teacher_student(
    *, seed: int = 0, n_train: int = 1000, n_test: int = 1000, dim: int = 100,
    hidden: int = 2, activation: str = "erf", second_layer: str = "ones", noise: float = 0.0,
) -> Dataset:
    """Soft-committee teacher (Saad & Solla 1995, "On-line learning in soft committee machines").

    ``x ~ N(0, I_d)``, ``y = sum_m v_m g(w_m . x / sqrt(d)) + noise * eps`` with teacher
    vectors ``w_m ~ N(0, I_d)`` (``m = 1..M``, ``M = hidden``), ``g(h) = erf(h / sqrt(2))``
    (Saad & Solla's choice; ``activation="relu"`` or ``"tanh"`` also) and second layer
    ``v = 1`` (``second_layer="ones"``) or ``v ~ N(0, 1)`` (``"gaussian"``).
    ``meta`` holds ``w`` of shape ``(M, d)`` and ``v`` of shape ``(M,)``; targets are ``(n, 1)``.

    Args:
        seed: random seed (the data are a deterministic function of it).
        n_train, n_test: sizes of the splits.
        dim: input dimension ``d``.
        hidden: teacher units ``M``.
        activation: ``"erf"`` (``g(h) = erf(h / sqrt(2))``), ``"relu"`` or ``"tanh"``.
        second_layer: ``"ones"`` or ``"gaussian"``.
        noise: standard deviation of the label noise.

    Returns:
        A regression ``Dataset``.

    References:
        Saad & Solla 1995, "On-line learning in soft committee machines" (Phys. Rev. E).

    Example:
        >>> d = teacher_student(n_train=5, n_test=5, dim=10, hidden=2)
        >>> d.y_train.shape, d.meta["w"].shape, d.task
        ((5, 1), (2, 10), 'regression')
    """
    _positive(n_train=n_train, dim=dim, hidden=hidden)
    acts: dict[str, Callable] = {
        "erf": lambda h: special.erf(h / np.sqrt(2.0)),
        "relu": lambda h: np.maximum(h, 0.0),
        "tanh": np.tanh,
    }
    if activation not in acts:
        raise InvalidArgumentError(f"activation must be one of {sorted(acts)}, got "
                                   f"{activation!r}")
    if second_layer not in ("ones", "gaussian"):
        raise InvalidArgumentError(f"second_layer must be 'ones' or 'gaussian', got "
                                   f"{second_layer!r}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((hidden, dim))
    v = np.ones(hidden) if second_layer == "ones" else rng.standard_normal(hidden)
    n = n_train + n_test
    x = rng.standard_normal((n, dim))
    y = acts[activation](x @ w.T / np.sqrt(dim)) @ v + noise * rng.standard_normal(n)
    meta = {"w": w, "v": v, "activation": activation}
    return _split("teacher_student", x, y[:, None], n_train, None, "regression", meta)


def xor(
    *, seed: int = 0, n_train: int = 1000, n_test: int = 1000, dim: int = 2,
    pair: Sequence[int] = (0, 1), task: str = "classification",
) -> Dataset:
    """XOR on the hypercube: ``x ~ Uniform{-1, +1}^d``, target ``x_i x_j`` for ``(i, j) = pair``.

    ``task="regression"`` gives targets ``x_i x_j`` in ``{-1, +1}`` (shape ``(n, 1)``);
    ``"classification"`` gives the XOR label ``(1 - x_i x_j) / 2``: 1 iff the signs differ.

    Args:
        seed: random seed (the data are a deterministic function of it).
        n_train, n_test: sizes of the splits.
        dim: ``d``.
        pair: the two coordinates ``(i, j)``.
        task: ``"classification"`` or ``"regression"``.

    Returns:
        The ``Dataset``.

    Example:
        >>> d = xor(n_train=4, n_test=4)
        >>> bool(((d.x_train[:, 0] * d.x_train[:, 1] < 0) == (d.y_train == 1)).all())
        True
    """
    _positive(n_train=n_train, dim=dim)
    i, j = (int(p) for p in pair)
    if not (0 <= i < dim and 0 <= j < dim and i != j):
        raise InvalidArgumentError(f"pair must be two distinct coordinates in [0, {dim}), "
                                   f"got {tuple(pair)}")
    rng = np.random.default_rng(seed)
    x = _hypercube(rng, n_train + n_test, dim)
    prod = x[:, i] * x[:, j]
    return _parity_task("xor", x, prod, n_train, task, {"pair": (i, j)})


def sparse_parity(
    *, seed: int = 0, n_train: int = 1000, n_test: int = 1000, n_bits: int = 20, k: int = 3,
    task: str = "classification",
) -> Dataset:
    """(n, k)-sparse parity (Barak et al. 2022, "Hidden progress in deep learning: SGD learns
    parities near the computational limit").

    ``x ~ Uniform{-1, +1}^n``, ``chi_S(x) = prod_{i in S} x_i`` for a hidden set ``S`` of ``k``
    coordinates drawn uniformly (``meta["relevant"]``). Regression targets are ``chi_S(x)``;
    classification labels ``(1 - chi_S(x)) / 2`` are the parity of the number of ``-1`` bits
    in ``S``.

    Args:
        seed: random seed (the data are a deterministic function of it).
        n_train, n_test: sizes of the splits.
        n_bits: ``n``.
        k: size of the hidden set ``S``.
        task: ``"classification"`` or ``"regression"``.

    Returns:
        The ``Dataset``.

    References:
        Barak, Edelman, Goel, Kakade, Malach & Zhang 2022, "Hidden progress in deep learning: SGD
        learns parities near the computational limit" (NeurIPS).

    Example:
        >>> d = sparse_parity(n_train=8, n_test=8, n_bits=6, k=2, task="regression")
        >>> chi = np.prod(d.x_train[:, d.meta["relevant"]], axis=1)
        >>> bool(np.allclose(d.y_train[:, 0], chi))
        True
    """
    _positive(n_train=n_train, n_bits=n_bits, k=k)
    if k > n_bits:
        raise InvalidArgumentError(f"k={k} relevant bits cannot exceed n_bits={n_bits}")
    rng = np.random.default_rng(seed)
    relevant = np.sort(rng.choice(n_bits, size=k, replace=False))
    x = _hypercube(rng, n_train + n_test, n_bits)
    chi = np.prod(x[:, relevant], axis=1)
    return _parity_task("sparse_parity", x, chi, n_train, task, {"relevant": relevant})


def _parity_task(name, x, chi, n_train, task, meta) -> Dataset:
    if task == "classification":
        return _split(name, x, ((1 - chi) / 2).astype(np.int64), n_train, 2, task, meta)
    if task == "regression":
        return _split(name, x, chi[:, None], n_train, None, task, meta)
    raise InvalidArgumentError(f"task must be 'classification' or 'regression', got {task!r}")


def sphere(
    *, seed: int = 0, n_train: int = 1000, n_test: int = 1000, dim: int = 3,
    target="harmonic", degree: int = 2, noise: float = 0.0,
) -> Dataset:
    """Points uniform on the unit sphere ``S^{d-1} in R^d`` (``x = z / |z|``, ``z ~ N(0, I)``)
    with a regression target ``f(x)`` (shape ``(n, 1)``) plus ``noise * eps``.

    ``target``: ``"harmonic"``: the zonal spherical harmonic of ``degree`` k around a random
    unit direction ``beta`` (``meta["beta"]``), normalized to ``f(beta) = 1``:
    ``f(x) = C_k^{(d-2)/2}(beta . x) / C_k^{(d-2)/2}(1)`` (Gegenbauer polynomials; for
    ``d = 2`` the Chebyshev ``T_k``, i.e. ``cos(k theta)``) -- the eigenfunctions of every
    dot-product kernel on the sphere, so the spectral-bias literature uses them as targets
    (e.g. Bordelon, Canatar & Pehlevan 2020); ``"linear"``: ``beta . x``; or a callable
    mapping ``(n, d)`` points to ``(n,)`` values.

    Args:
        seed: random seed (the data are a deterministic function of it).
        n_train, n_test: sizes of the splits.
        dim: ``d >= 2``.
        target: ``"harmonic"``, ``"linear"`` or a callable.
        degree: ``k`` of the harmonic target.
        noise: standard deviation of the label noise.

    Returns:
        A regression ``Dataset``.

    References:
        Bordelon, Canatar & Pehlevan 2020, "Spectrum dependent learning curves in kernel
        regression and wide neural networks" (ICML).

    Example:
        >>> d = sphere(n_train=5, n_test=5, dim=3)
        >>> bool(np.allclose(np.linalg.norm(d.x_train, axis=1), 1.0, rtol=1e-6))
        True
    """
    _positive(n_train=n_train, dim=dim)
    if dim < 2:
        raise InvalidArgumentError(f"dim must be >= 2 for a sphere S^(dim-1), got {dim}")
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(dim)
    beta /= np.linalg.norm(beta)
    z = rng.standard_normal((n_train + n_test, dim))
    x = z / np.linalg.norm(z, axis=1, keepdims=True)
    t = x @ beta
    if callable(target):
        y = np.asarray(target(x), dtype=float).reshape(len(x))
    elif target == "linear":
        y = t
    elif target == "harmonic":
        y = zonal_harmonic(int(degree), dim, t)
    else:
        raise InvalidArgumentError(f"target must be 'harmonic', 'linear' or a callable, got "
                                   f"{target!r}")
    y = y + noise * rng.standard_normal(len(x))
    meta = {"beta": beta, "target": target if isinstance(target, str) else "callable",
            "degree": int(degree)}
    return _split("sphere", x, y[:, None], n_train, None, "regression", meta)


def zonal_harmonic(degree: int, dim: int, t: np.ndarray) -> np.ndarray:
    """``C_k^{(d-2)/2}(t) / C_k^{(d-2)/2}(1)`` (Chebyshev ``T_k(t)`` for ``d = 2``).

    Args:
        degree: ``k >= 0``.
        dim: ``d >= 2``.
        t: points in ``[-1, 1]`` (cosines of angles to the pole).

    Returns:
        The normalized harmonic at ``t`` (1 at ``t = 1``).

    References:
        Bordelon, Canatar & Pehlevan 2020 (ICML); Gegenbauer polynomials, DLMF §18.3.

    Example:
        >>> zonal_harmonic(2, 3, np.array([1.0, 0.0]))   # Legendre P_2(t) = (3t² - 1)/2
        array([ 1. , -0.5])
    """
    if degree < 0:
        raise InvalidArgumentError(f"degree must be >= 0, got {degree}")
    if dim == 2:
        return special.eval_chebyt(degree, t)
    alpha = (dim - 2) / 2
    return special.eval_gegenbauer(degree, alpha, t) / special.eval_gegenbauer(degree, alpha, 1.0)


def circle(*, seed: int = 0, n_train: int = 1000, n_test: int = 1000, target="harmonic",
           degree: int = 2, noise: float = 0.0) -> Dataset:
    """``sphere`` with ``dim=2``: ``x = (cos theta, sin theta)``, harmonic target
    ``cos(k (theta - theta_beta))``.

    Args:
        seed: random seed (the data are a deterministic function of it).
        n_train, n_test: sizes of the splits.
        target, degree, noise: as in :func:`sphere`.

    Returns:
        A regression ``Dataset`` named ``"circle"``.

    Example:
        >>> circle(n_train=4, n_test=4).x_train.shape
        (4, 2)
    """
    d = sphere(seed=seed, n_train=n_train, n_test=n_test, dim=2, target=target, degree=degree,
               noise=noise)
    return Dataset("circle", d.x_train, d.y_train, d.x_test, d.y_test, None, d.task, d.meta)


def modular_arithmetic(
    *, seed: int = 0, p: int = 97, operation: str = "add", train_fraction: float = 0.5,
) -> Dataset:
    """Algorithmic task of the grokking paper (Power et al. 2022, "Grokking: generalization
    beyond overfitting on small algorithmic datasets").

    All ``p^2`` pairs ``(a, b) in Z_p^2`` with label ``a o b mod p`` for ``o`` in ``add``
    (``a + b``), ``sub`` (``a - b``), ``mul`` (``a * b``); input is the concatenation of the
    one-hot codes of ``a`` and ``b`` (shape ``(2p,)``). A random ``train_fraction`` of the
    pairs is the training set, the rest the test set. ``meta["pairs_train"]`` and
    ``meta["pairs_test"]`` hold the ``(a, b)`` integers.

    Args:
        seed: seed of the train/test split.
        p: the modulus.
        operation: ``"add"``, ``"sub"`` or ``"mul"``.
        train_fraction: fraction of the ``p²`` pairs in the training set, in ``(0, 1)``.

    Returns:
        A classification ``Dataset`` with ``p`` classes.

    References:
        Power, Burda, Edwards, Babuschkin & Misra 2022, "Grokking: generalization beyond
        overfitting on small algorithmic datasets".

    Example:
        >>> d = modular_arithmetic(p=5)
        >>> a, b = d.meta["pairs_train"][0]
        >>> d.x_train.shape[1], bool(d.y_train[0] == (a + b) % 5)
        (10, True)
    """
    ops = {"add": np.add, "sub": np.subtract, "mul": np.multiply}
    if operation not in ops:
        raise InvalidArgumentError(f"operation must be one of {sorted(ops)}, got {operation!r}")
    _positive(p=p)
    if not 0.0 < train_fraction < 1.0:
        raise InvalidArgumentError(f"train_fraction must be in (0, 1), got {train_fraction}")
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    order = np.random.default_rng(seed).permutation(p * p)
    a, b = a[order], b[order]
    eye = np.eye(p)
    x = np.concatenate([eye[a], eye[b]], axis=1)
    y = ops[operation](a, b) % p
    n_train = round(train_fraction * p * p)
    pairs = np.stack([a, b], axis=1)
    meta = {"p": p, "operation": operation, "pairs_train": pairs[:n_train],
            "pairs_test": pairs[n_train:]}
    return _split("modular_arithmetic", x, y.astype(np.int64), n_train, p, "classification",
                  meta)
