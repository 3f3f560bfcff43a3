"""The two-layer network ``f(x) = alpha / m^gamma * sum_i a_i sigma(w_i . x + b_i)``: its
parameters, forward pass, losses, time scaling ``lr_scale`` and infinite-width ReLU NTK.

The scalings and time units are described in :mod:`dynkit.theory.two_layer`; the trainers
that move these parameters are in :mod:`dynkit.theory.two_layer_train`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.validation import check_integer, check_positive

__all__ = ["LOSSES", "TwoLayer", "apply", "check_data", "effective_rank", "init", "loss",
           "lr_scale", "ntk_predict", "relu_ntk"]


_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "erf": lambda z: jax.scipy.special.erf(z / math.sqrt(2.0)),
    "tanh": jnp.tanh,
}
#: The losses of ``loss`` and the trainers.
LOSSES = ("mse", "logistic")


@dataclass(frozen=True)
class TwoLayer:
    """Architecture of ``f(x) = alpha / width^gamma * sum_i a_i sigma(w_i . x + b_i)``.

    Args:
        width: the number of neurons ``m``.
        gamma: the scaling exponent in [1/2, 1] (1/2: NTK/lazy, 1: mean-field).
        alpha: the output scale ``alpha > 0``.
        activation: ``sigma``, one of ``"relu"``, ``"erf"`` (``erf(z / sqrt 2)``), ``"tanh"``.
        bias: add the trainable biases ``b_i``.

    References:
        Mei, Montanari & Nguyen 2018; Chizat, Oyallon & Bach 2019 (module docstring).

    Example:
        >>> net = TwoLayer(width=100, gamma=1.0)
        >>> net.scale
        0.01
    """

    width: int
    gamma: float = 0.5
    alpha: float = 1.0
    activation: str = "relu"
    bias: bool = False

    def __post_init__(self):
        if isinstance(self.width, bool) or not isinstance(self.width, (int, np.integer)) \
                or self.width < 1:
            raise InvalidArgumentError(f"TwoLayer: width must be a positive integer, got "
                                       f"{self.width!r}")
        if not (isinstance(self.gamma, (int, float)) and 0.5 <= self.gamma <= 1.0):
            raise InvalidArgumentError(f"TwoLayer: gamma must lie in [1/2, 1] (1/2 = NTK, "
                                       f"1 = mean-field), got {self.gamma!r}")
        check_positive("TwoLayer: alpha", self.alpha)
        if self.activation not in _ACTIVATIONS:
            raise InvalidArgumentError(f"TwoLayer: activation must be one of "
                                       f"{sorted(_ACTIVATIONS)}, got {self.activation!r}")

    @property
    def scale(self) -> float:
        """The output prefactor ``alpha / m^gamma``."""
        return self.alpha / self.width ** self.gamma


def check_data(x, y, where: str):
    """``(x (n, d), y (n,))`` as jax arrays, else a clear error naming ``where``."""
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2:
        raise ShapeMismatchError(f"{where}: x must have shape (n, d), got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ShapeMismatchError(f"{where}: y must have shape ({x.shape[0]},) to match x "
                                 f"{x.shape}, got {y.shape}")
    if not (bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(jnp.isfinite(y)))):
        raise InvalidArgumentError(f"{where}: x and y must be finite (found NaN/inf)")
    return x, y


def lr_scale(net: TwoLayer) -> float:
    """Raw-parameter step per unit of time, ``eta / lr = m^(2 gamma - 1) / alpha^2`` (module
    docstring).

    Args:
        net: the architecture.

    Returns:
        The factor, a float.

    References:
        Chizat, Oyallon & Bach 2019; Mei, Montanari & Nguyen 2018, eq. (6).

    Example:
        >>> lr_scale(TwoLayer(width=100, gamma=1.0, alpha=2.0))
        25.0
    """
    return net.width ** (2 * net.gamma - 1) / net.alpha ** 2


def init(key, net: TwoLayer, dim: int, init_scale: float = 1.0, balanced: bool = False,
         symmetric: bool = False, dtype=None) -> dict:
    """Random parameters ``{"a": (m,), "w": (m, d), "b": (m,)}``.

    ``w_i ~ N(0, init_scale^2 I_d / d)``, ``a_i ~ N(0, init_scale^2)``, ``b_i ~ N(0,
    init_scale^2 / d)`` if ``net.bias`` else 0.

    Args:
        key: the PRNG key.
        net: the architecture.
        dim: the input dimension ``d``.
        init_scale: the common scale of the three distributions.
        balanced: set ``a_i = +-|(w_i, b_i)|`` (random sign), the balanced initialization of
            homogeneous nets.
        symmetric: duplicate the first m/2 neurons with ``a -> -a`` so that ``f_0 = 0``
            exactly; needs an even width.
        dtype: the floating dtype (default: JAX's default float).

    Returns:
        The parameter dict.

    References:
        Chizat, Oyallon & Bach 2019, Sec. 2 (symmetric initialization).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=3, symmetric=True)
        >>> p["w"].shape, bool(jnp.all(apply(p, net, jnp.ones((2, 3))) == 0))
        ((4, 3), True)
    """
    dim = check_integer("init: dim", dim)
    check_positive("init: init_scale", init_scale)
    dtype = dtype or jnp.result_type(float)
    m = net.width
    if symmetric and m % 2:
        raise InvalidArgumentError(f"init: symmetric=True needs an even width, got {m}")
    half = m // 2 if symmetric else m
    kw, ka, kb, ks = jax.random.split(key, 4)
    w = init_scale * jax.random.normal(kw, (half, dim), dtype) / math.sqrt(dim)
    b = (init_scale * jax.random.normal(kb, (half,), dtype) / math.sqrt(dim) if net.bias
         else jnp.zeros((half,), dtype))
    if balanced:
        sign = jnp.where(jax.random.bernoulli(ks, 0.5, (half,)), 1.0, -1.0).astype(dtype)
        a = sign * jnp.sqrt(jnp.sum(w ** 2, axis=1) + b ** 2)
    else:
        a = init_scale * jax.random.normal(ka, (half,), dtype)
    if symmetric:
        w, b, a = jnp.concatenate([w, w]), jnp.concatenate([b, b]), jnp.concatenate([a, -a])
    return {"a": a, "w": w, "b": b}


def apply(params: dict, net: TwoLayer, x) -> jax.Array:
    """The network output ``f(x) = alpha / m^gamma * sum_i a_i sigma(w_i . x + b_i)``.

    Args:
        params: the parameter dict (:func:`init`).
        net: the architecture.
        x: inputs of shape ``(n, d)``.

    Returns:
        The outputs, shape ``(n,)``.

    References:
        Mei, Montanari & Nguyen 2018; Chizat, Oyallon & Bach 2019.

    Example:
        >>> import jax.numpy as jnp
        >>> p = {"a": jnp.array([1.0, -1.0]), "w": jnp.eye(2), "b": jnp.zeros(2)}
        >>> apply(p, TwoLayer(width=2, gamma=1.0), jnp.array([[3.0, 1.0]])).tolist()
        [1.0]
    """
    pre = x @ params["w"].T + params["b"]
    return net.scale * (_ACTIVATIONS[net.activation](pre) @ params["a"])


def loss(params: dict, net: TwoLayer, x, y, kind: str = "mse") -> jax.Array:
    """The training loss: ``1/2 mean (f - y)^2`` (``"mse"``) or ``mean log(1 + exp(-y f))``
    (``"logistic"``).

    Args:
        params: the parameter dict.
        net: the architecture.
        x, y: inputs ``(n, d)`` and targets ``(n,)``.
        kind: ``"mse"`` or ``"logistic"``.

    Returns:
        The loss, a scalar array.

    References:
        Chizat & Bach 2020, "Implicit bias of gradient descent for wide two-layer neural
        networks trained with the logistic loss" (logistic loss).

    Example:
        >>> import jax.numpy as jnp
        >>> p = {"a": jnp.array([1.0, -1.0]), "w": jnp.eye(2), "b": jnp.zeros(2)}
        >>> net = TwoLayer(width=2, gamma=1.0)
        >>> float(loss(p, net, jnp.array([[3.0, 1.0]]), jnp.array([0.0])))
        0.5
    """
    f = apply(params, net, x)
    if kind == "mse":
        return 0.5 * jnp.mean((f - y) ** 2)
    return jnp.mean(jnp.logaddexp(0.0, -y * f))


def effective_rank(w) -> jax.Array:
    """Entropy effective rank ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum s`` over the
    singular values ``s_k`` of ``w``.

    Args:
        w: a matrix.

    Returns:
        The effective rank, a scalar array in ``[1, min(w.shape)]``.

    References:
        Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality".

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(effective_rank(jnp.eye(3))), 5)
        3.0
    """
    s = jnp.linalg.svd(w, compute_uv=False)
    p = s / jnp.sum(s)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def relu_ntk(x1, x2, init_scale_w: float = 1.0, init_scale_a: float = 1.0,
             alpha: float = 1.0) -> jax.Array:
    """Infinite-width NTK of the bias-free ReLU :class:`TwoLayer` with ``gamma = 1/2`` and the
    :func:`init` distribution (``w ~ N(0, s_w^2 I/d)``, ``a ~ N(0, s_a^2)``), in the time units
    of this module (the ``1/alpha^2`` of ``lr_scale`` included, so ``alpha`` cancels):

        Theta(x, x') = s_w^2/d |x||x'| (sin t + (pi - t) cos t) / (2 pi)
                       + s_a^2 (x . x') (pi - t) / (2 pi),   cos t = x.x' / (|x||x'|),

    the arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009) summed as in Jacot et al. 2018.

    Args:
        x1, x2: inputs of shapes ``(n1, d)`` and ``(n2, d)``, nonzero rows.
        init_scale_w, init_scale_a: ``s_w`` and ``s_a``.
        alpha: the output scale (cancels; accepted for symmetry with :class:`TwoLayer`).

    Returns:
        The kernel matrix, shape ``(n1, n2)``.

    References:
        Jacot, Gabriel & Hongler 2018, "Neural tangent kernel"; Cho & Saul 2009, "Kernel
        methods for deep learning".

    Example:
        >>> import jax.numpy as jnp
        >>> k = relu_ntk(jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> [round(float(v), 6) for v in k[0]]
        [0.75, 0.079577]
    """
    del alpha  # the time scaling divides the kernel alpha^2 out
    x1, x2 = jnp.asarray(x1), jnp.asarray(x2)
    d = x1.shape[1]
    n1 = jnp.linalg.norm(x1, axis=1)[:, None]
    n2 = jnp.linalg.norm(x2, axis=1)[None, :]
    dot = x1 @ x2.T
    cos = jnp.clip(dot / (n1 * n2), -1.0, 1.0)
    u1, u2 = x1 / n1, x2 / n2.T                     # angle via atan2: exact for x = x'
    diff = jnp.linalg.norm(u1[:, None, :] - u2[None, :, :], axis=-1)
    summ = jnp.linalg.norm(u1[:, None, :] + u2[None, :, :], axis=-1)
    t = 2 * jnp.arctan2(diff, summ)
    k1 = n1 * n2 * (jnp.sin(t) + (jnp.pi - t) * cos) / (2 * jnp.pi)
    k0 = (jnp.pi - t) / (2 * jnp.pi)
    return init_scale_w ** 2 / d * k1 + init_scale_a ** 2 * dot * k0


def ntk_predict(x_train, y_train, x_test, init_scale_w=1.0, init_scale_a=1.0) -> jax.Array:
    """Kernel regression ``Theta(x, X) Theta(X, X)^{-1} y`` with :func:`relu_ntk`: the
    t -> infinity prediction of a lazily trained network with ``f_0 = 0``.

    Args:
        x_train, y_train: training inputs ``(n, d)`` and targets ``(n,)``.
        x_test: test inputs ``(n_test, d)``.
        init_scale_w, init_scale_a: the scales of :func:`relu_ntk`.

    Returns:
        The predictions, shape ``(n_test,)``.

    References:
        Jacot, Gabriel & Hongler 2018; Lee et al. 2019, "Wide neural networks of any depth
        evolve as linear models under gradient descent".

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> [round(float(v), 5) for v in ntk_predict(x, jnp.array([1.0, -1.0]), x)]
        [1.0, -1.0]
    """
    k = relu_ntk(x_train, x_train, init_scale_w, init_scale_a)
    kt = relu_ntk(x_test, x_train, init_scale_w, init_scale_a)
    return kt @ jnp.linalg.solve(k, jnp.asarray(y_train))
