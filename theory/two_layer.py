"""Two-layer networks ``f(x) = alpha / m^gamma * sum_i a_i sigma(w_i . x + b_i)``, trained.

The family interpolates between the two classical limits of wide networks:

* ``gamma = 1/2`` -- NTK / lazy scaling (Jacot et al. 2018; Chizat, Oyallon & Bach 2019),
* ``gamma = 1``   -- mean-field scaling (Mei, Montanari & Nguyen 2018; Chizat & Bach 2018;
  Rotskoff & Vanden-Eijnden 2018),

and ``alpha`` is the output scale of Chizat, Oyallon & Bach 2019 ("On lazy training in
differentiable programming"): large ``alpha`` makes any scaling lazy.

Time scaling (so that limits exist). The learning rate the user passes, ``lr``, is a step of
*function-space / particle time*; the step applied to the raw parameters is

    eta = lr * m^(2 gamma - 1) / alpha^2          (``lr_scale``)

With it the predictions move by O(1) per unit time for every (m, gamma, alpha): the tangent
kernel ``sum_i |grad_theta_i f|^2`` is O(alpha^2 m^(1 - 2 gamma)). For ``gamma = 1,
alpha = 1`` the step of one particle is ``lr * grad Psi(theta_i; rho_m)``, i.e. ``lr`` is the
time step of the mean-field PDE ``d_t rho = div(rho grad Psi)`` (Mei et al. 2018, eq. (6));
for ``gamma = 1/2`` particles move by O(1/sqrt(m)) (lazy), and for large ``alpha`` by
O(1/alpha). Gradient flow integrates ``dtheta/dt = -lr_scale * grad L(theta)`` in the same
time units; ``time = step * lr`` for the discrete methods.

Losses: ``"mse"`` is ``1/2 mean (f - y)^2``; ``"logistic"`` is ``mean log(1 + exp(-y f))``.
All trainers run a ``lax.scan`` over record points with a ``lax.fori_loop`` of steps inside
(no Python per-step loop) and return a :class:`Trajectory`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory.ode import dopri5, record_times

__all__ = [
    "Trajectory",
    "TwoLayer",
    "apply",
    "dopri5",
    "effective_rank",
    "gd",
    "gradient_flow",
    "init",
    "langevin",
    "loss",
    "lr_scale",
    "neurons",
    "ntk_predict",
    "online_sgd",
    "relu_ntk",
    "sgd",
]

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "erf": lambda z: jax.scipy.special.erf(z / math.sqrt(2.0)),
    "tanh": jnp.tanh,
}
_LOSSES = ("mse", "logistic")


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
        _check_positive("TwoLayer: alpha", self.alpha)
        if self.activation not in _ACTIVATIONS:
            raise InvalidArgumentError(f"TwoLayer: activation must be one of "
                                       f"{sorted(_ACTIVATIONS)}, got {self.activation!r}")

    @property
    def scale(self) -> float:
        """The output prefactor ``alpha / m^gamma``."""
        return self.alpha / self.width ** self.gamma


def _check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a positive finite number, got {value!r}")
    if not (math.isfinite(v) and v > 0):
        raise InvalidArgumentError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _check_nonneg(name: str, value) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise InvalidArgumentError(f"{name} must be a non-negative finite number, got {value!r}")
    return v


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_data(x, y, where: str):
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
    dim = _check_int("init: dim", dim)
    _check_positive("init: init_scale", init_scale)
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
    return _objective(params, net, x, y, kind)


def _objective(params, net, x, y, kind):
    f = apply(params, net, x)
    if kind == "mse":
        return 0.5 * jnp.mean((f - y) ** 2)
    return jnp.mean(jnp.logaddexp(0.0, -y * f))


@dataclass(frozen=True)
class Trajectory:
    """Recorded training run.

    ``params`` holds the parameters stacked over records (leading axis R); ``history`` is a
    tidy DataFrame, one row per record: ``step, time, train_loss, test_loss, frac_active,
    eff_rank, rel_dist`` (``frac_active``: fraction of neurons active on at least one training
    input; ``eff_rank``: :func:`effective_rank` of W; ``rel_dist``: ``|theta(t) - theta(0)| /
    |theta(0)|``, the laziness measure of Chizat et al. 2019).

    Args:
        net: the architecture.
        params: the parameter dict, each leaf with a leading axis of records.
        history: the per-record table.

    References:
        Chizat, Oyallon & Bach 2019 (``rel_dist``); Roy & Vetterli 2007 (``eff_rank``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> tr = gd(p, net, jnp.eye(2), jnp.array([1.0, -1.0]), lr=0.1, steps=2)
        >>> list(tr.history.columns)[:4], tr.final["w"].shape
        (['step', 'time', 'train_loss', 'test_loss'], (4, 2))
    """

    net: TwoLayer
    params: dict
    history: pd.DataFrame

    @property
    def final(self) -> dict:
        """Parameters at the last record."""
        return jax.tree_util.tree_map(lambda p: p[-1], self.params)


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


def _flat_norm(p: dict) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree_util.tree_leaves(p)))


@functools.partial(jax.jit, static_argnames=("net", "kind"))
def _history_arrays(stacked, x, y, x_test, y_test, *, net, kind):
    p0 = jax.tree_util.tree_map(lambda p: p[0], stacked)
    n0 = _flat_norm(p0)

    def row(p):
        pre = x @ p["w"].T + p["b"]
        diff = jax.tree_util.tree_map(jnp.subtract, p, p0)
        out = [_objective(p, net, x, y, kind), jnp.mean(jnp.any(pre > 0, axis=0)),
               effective_rank(p["w"]), _flat_norm(diff) / n0]
        out.append(_objective(p, net, x_test, y_test, kind) if x_test is not None
                   else jnp.nan)
        return out

    return jax.vmap(row)(stacked)


def _history(net, stacked, steps, times, x, y, x_test, y_test, kind) -> pd.DataFrame:
    train, active, erank, rel, test = (np.asarray(v) for v in _history_arrays(
        stacked, x, y, x_test, y_test, net=net, kind=kind))
    return pd.DataFrame({"step": steps, "time": times, "train_loss": train, "test_loss": test,
                         "frac_active": active, "eff_rank": erank, "rel_dist": rel})


def _run(step_fn: Callable, params: dict, key, steps: int, record_every: int):
    """``lax.scan`` over records of a ``fori_loop`` of ``record_every`` steps; records the
    parameters at step 0 and after every ``record_every`` steps."""
    n_rec = steps // record_every

    def block(carry, _):
        def body(i, c):
            p, k = c
            k, sub = jax.random.split(k)
            return step_fn(p, sub), k

        carry = jax.lax.fori_loop(0, record_every, body, carry)
        return carry, carry[0]

    _, rec = jax.lax.scan(block, (params, key), None, length=n_rec)
    stacked = jax.tree_util.tree_map(lambda p0, r: jnp.concatenate([p0[None], r]), params, rec)
    return stacked, np.arange(n_rec + 1) * record_every


@functools.partial(jax.jit, static_argnames=("net", "loss_kind", "batch_size", "sample_fn",
                                             "noisy", "steps", "record_every"))
def _compiled_run(params, key, x, y, eta, lr, weight_decay, temperature, *, net, loss_kind,
                  batch_size, sample_fn, noisy, steps, record_every):
    """The jitted training loop; data and rates are traced, so runs that differ only in them
    share one compilation."""
    trainable = {"a": 1.0, "w": 1.0, "b": 1.0 if net.bias else 0.0}
    grad = jax.grad(_objective)
    n = x.shape[0]

    def step_fn(p, k):
        kd, kn = jax.random.split(k)
        if sample_fn is not None:
            xb, yb = sample_fn(kd, batch_size)
        elif batch_size is not None:
            idx = jax.random.choice(kd, n, (batch_size,), replace=False)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        g = grad(p, net, xb, yb, loss_kind)
        noise_keys = dict(zip(("a", "b", "w"), jax.random.split(kn, 3)))
        out = {}
        for name, v in p.items():
            new = v - trainable[name] * (eta * g[name] + lr * weight_decay * v)
            if noisy:
                new = new + trainable[name] * jnp.sqrt(2 * lr * temperature) * \
                    jax.random.normal(noise_keys[name], v.shape, v.dtype)
            out[name] = new
        return out

    return _run(step_fn, params, key, steps, record_every)[0]


def _train(params, net, x, y, *, lr, steps, record_every, batch_size, sample_fn, weight_decay,
           temperature, key, x_test, y_test, loss_kind, where):
    lr = _check_positive(f"{where}: lr", lr)
    steps = _check_int(f"{where}: steps", steps)
    record_every = _check_int(f"{where}: record_every", record_every or steps)
    if steps % record_every:
        raise InvalidArgumentError(f"{where}: steps ({steps}) must be a multiple of "
                                   f"record_every ({record_every})")
    weight_decay = _check_nonneg(f"{where}: weight_decay", weight_decay)
    temperature = _check_nonneg(f"{where}: temperature", temperature)
    if loss_kind not in _LOSSES:
        raise InvalidArgumentError(f"{where}: loss must be one of {_LOSSES}, got {loss_kind!r}")
    x, y = _check_data(x, y, where)
    if x_test is not None:
        x_test, y_test = _check_data(x_test, y_test, where + " (test)")
    if params["w"].shape != (net.width, x.shape[1]):
        raise ShapeMismatchError(f"{where}: params['w'] has shape {params['w'].shape}, expected "
                                 f"(width={net.width}, d={x.shape[1]})")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = _check_int(f"{where}: batch_size", batch_size)
        if sample_fn is None and batch_size > n:
            raise InvalidArgumentError(f"{where}: batch_size {batch_size} exceeds n = {n}")
    if key is None:
        key = jax.random.PRNGKey(0)
    stacked = _compiled_run(params, key, x, y, lr * lr_scale(net), lr, weight_decay,
                            temperature, net=net, loss_kind=loss_kind, batch_size=batch_size,
                            sample_fn=sample_fn, noisy=temperature > 0, steps=steps,
                            record_every=record_every)
    rec_steps = np.arange(steps // record_every + 1) * record_every
    hist = _history(net, stacked, rec_steps, rec_steps * lr, x, y, x_test, y_test, loss_kind)
    return Trajectory(net, stacked, hist)


def gd(params, net, x, y, *, lr, steps, record_every=None, weight_decay=0.0, x_test=None,
       y_test=None, loss="mse") -> Trajectory:
    """Full-batch gradient descent with coupled weight decay ``lambda = weight_decay``:

        theta <- theta - lr (lr_scale grad L(theta) + lambda theta).

    Args:
        params: initial parameters (:func:`init`).
        net: the architecture.
        x, y: training inputs ``(n, d)`` and targets ``(n,)``.
        lr: step in units of time (module docstring); ``time = step * lr``.
        steps: number of steps, a multiple of ``record_every``.
        record_every: steps between records (default: only the start and the end).
        weight_decay: the coefficient ``lambda >= 0`` of the L2 penalty ``lambda/2 |theta|^2``.
        x_test, y_test: optional test set for ``test_loss``.
        loss: ``"mse"`` or ``"logistic"``.

    Returns:
        The :class:`Trajectory` (records at steps ``0, record_every, ..., steps``).

    References:
        Chizat, Oyallon & Bach 2019, "On lazy training in differentiable programming".

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> x, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, -1.0])
        >>> tr = gd(p, net, x, y, lr=0.1, steps=4, record_every=2)
        >>> tr.history["step"].tolist()
        [0, 2, 4]
    """
    return _train(params, net, x, y, lr=lr, steps=steps, record_every=record_every,
                  batch_size=None, sample_fn=None, weight_decay=weight_decay, temperature=0.0,
                  key=None, x_test=x_test, y_test=y_test, loss_kind=loss, where="gd")


def sgd(params, net, x, y, *, lr, steps, batch_size, key, record_every=None, weight_decay=0.0,
        x_test=None, y_test=None, loss="mse") -> Trajectory:
    """Minibatch SGD: each step draws ``batch_size`` distinct training points uniformly and
    takes the :func:`gd` step on them.

    Args:
        params, net, x, y, lr, steps, record_every, weight_decay, x_test, y_test, loss: as in
            :func:`gd`.
        batch_size: points per step (at most ``n``).
        key: the PRNG key of the batch draws.

    Returns:
        The :class:`Trajectory`.

    References:
        Robbins & Monro 1951; Mei, Montanari & Nguyen 2018, "A mean field view of the landscape
        of two-layer neural networks".

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> x, y = jnp.eye(2), jnp.array([1.0, -1.0])
        >>> tr = sgd(p, net, x, y, lr=0.1, steps=2, batch_size=1, key=jax.random.PRNGKey(1))
        >>> len(tr.history)
        2
    """
    return _train(params, net, x, y, lr=lr, steps=steps, record_every=record_every,
                  batch_size=batch_size, sample_fn=None, weight_decay=weight_decay,
                  temperature=0.0, key=key, x_test=x_test, y_test=y_test, loss_kind=loss,
                  where="sgd")


def online_sgd(params, net, sample_fn, *, lr, steps, batch_size, key, x, y, record_every=None,
               weight_decay=0.0, x_test=None, y_test=None, loss="mse") -> Trajectory:
    """Online (one-pass) SGD: each step uses a fresh batch ``sample_fn(key, batch_size) ->
    (x, y)`` (a pure JAX function) and takes the :func:`gd` step on it.

    Args:
        params, net, lr, steps, record_every, weight_decay, x_test, y_test, loss: as in
            :func:`gd`.
        sample_fn: ``(key, batch_size) -> (x, y)``, traced inside the training loop.
        batch_size: points per step.
        key: the PRNG key of the draws.
        x, y: a fixed set on which ``train_loss`` is reported.

    Returns:
        The :class:`Trajectory`.

    References:
        Saad & Solla 1995, "On-line learning in soft committee machines"; Goldt et al. 2019,
        "Dynamics of stochastic gradient descent for two-layer neural networks in the
        teacher-student setup".

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> def sample(k, b):
        ...     xb = jax.random.normal(k, (b, 2))
        ...     return xb, xb[:, 0]
        >>> tr = online_sgd(p, net, sample, lr=0.1, steps=2, batch_size=3,
        ...                 key=jax.random.PRNGKey(1), x=jnp.eye(2), y=jnp.array([1.0, 0.0]))
        >>> len(tr.history)
        2
    """
    return _train(params, net, x, y, lr=lr, steps=steps, record_every=record_every,
                  batch_size=batch_size, sample_fn=sample_fn, weight_decay=weight_decay,
                  temperature=0.0, key=key, x_test=x_test, y_test=y_test, loss_kind=loss,
                  where="online_sgd")


def langevin(params, net, x, y, *, lr, steps, key, temperature, weight_decay, batch_size=None,
             record_every=None, x_test=None, y_test=None, loss="mse") -> Trajectory:
    """Noisy (Langevin) GD/SGD with L2 penalty ``lambda = weight_decay``, Mei, Montanari &
    Nguyen 2018, eq. (9):

        theta_i <- theta_i - lr (lr_scale grad_i L + lambda theta_i) + sqrt(2 lr temperature) xi,

    ``xi ~ N(0, I)``. In mean-field scaling (gamma = 1, alpha = 1) this is the particle
    discretization of ``d_t rho = div(rho grad Psi) + lambda div(rho theta) + temperature Lap
    rho``, the Wasserstein gradient flow of the free energy ``R(rho) + lambda/2 int |theta|^2
    drho - temperature * Ent(rho)`` (``temperature = 1/beta``).

    Args:
        params, net, x, y, lr, steps, record_every, x_test, y_test, loss: as in :func:`gd`.
        key: the PRNG key of the noise (and of the batches).
        temperature: the noise temperature ``1/beta >= 0``.
        weight_decay: the L2 coefficient ``lambda >= 0``.
        batch_size: points per step (default: full batch).

    Returns:
        The :class:`Trajectory`.

    References:
        Mei, Montanari & Nguyen 2018, "A mean field view of the landscape of two-layer neural
        networks", eq. (9).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> tr = langevin(p, net, jnp.eye(2), jnp.array([1.0, -1.0]), lr=0.1, steps=2,
        ...               key=jax.random.PRNGKey(1), temperature=1e-3, weight_decay=1e-2)
        >>> tr.params["w"].shape
        (2, 4, 2)
    """
    return _train(params, net, x, y, lr=lr, steps=steps, record_every=record_every,
                  batch_size=batch_size, sample_fn=None, weight_decay=weight_decay,
                  temperature=temperature, key=key, x_test=x_test, y_test=y_test,
                  loss_kind=loss, where="langevin")


def gradient_flow(params, net, x, y, times, *, rtol=1e-8, atol=1e-10, weight_decay=0.0,
                  x_test=None, y_test=None, loss="mse", max_steps=100_000) -> Trajectory:
    """Gradient flow ``dtheta/dt = -(lr_scale grad L(theta) + lambda theta)``, ``lambda =
    weight_decay``, integrated by :func:`dynkit.theory.ode.dopri5` (adaptive Dormand-Prince
    5(4), local error per step below ``atol + rtol |theta|``). ReLU makes the vector field
    discontinuous where a neuron's hyperplane crosses a data point; the step control resolves
    those crossings at the cost of smaller steps there.

    Args:
        params, net, x, y, weight_decay, x_test, y_test, loss: as in :func:`gd`.
        times: increasing record times starting at 0 (``step`` in the history is the record
            index).
        rtol, atol: local error tolerances of the integrator.
        max_steps: the most adaptive steps; reaching it raises.

    Returns:
        The :class:`Trajectory`.

    References:
        Chizat & Bach 2018, "On the global convergence of gradient descent for
        over-parameterized models using optimal transport"; Dormand & Prince 1980.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> tr = gradient_flow(p, net, jnp.eye(2), jnp.array([1.0, -1.0]), [0.0, 0.5, 1.0])
        >>> tr.history["time"].tolist()
        [0.0, 0.5, 1.0]
    """
    times = record_times(times, "gradient_flow", from_zero=True)
    weight_decay = _check_nonneg("gradient_flow: weight_decay", weight_decay)
    x, y = _check_data(x, y, "gradient_flow")
    if x_test is not None:
        x_test, y_test = _check_data(x_test, y_test, "gradient_flow (test)")
    if loss not in _LOSSES:
        raise InvalidArgumentError(f"gradient_flow: loss must be one of {_LOSSES}, got {loss!r}")
    if not net.bias:
        params = dict(params, b=jnp.zeros_like(params["b"]))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    eta = lr_scale(net)
    mask = jax.flatten_util.ravel_pytree(
        {"a": jnp.ones_like(params["a"]), "b": jnp.full_like(params["b"], float(net.bias)),
         "w": jnp.ones_like(params["w"])})[0]

    def field(theta):
        g = jax.grad(_objective)(unravel(theta), net, x, y, loss)
        return -mask * (eta * jax.flatten_util.ravel_pytree(g)[0] + weight_decay * theta)

    ys, n = jax.jit(lambda th, ts: dopri5(field, th, ts, rtol, atol, max_steps))(
        flat, jnp.asarray(times, flat.dtype))
    if int(n) >= max_steps:
        raise InvalidArgumentError(f"gradient_flow: not finished after max_steps={max_steps} "
                                   "adaptive steps; raise max_steps or loosen rtol/atol")
    stacked = jax.vmap(unravel)(ys)
    hist = _history(net, stacked, np.arange(times.size), times, x, y, x_test, y_test, loss)
    return Trajectory(net, stacked, hist)


def neurons(traj: Trajectory, x=None, directions: dict | None = None) -> pd.DataFrame:
    """Per-neuron table, one row per (record, neuron).

    Columns: ``step, time, neuron, a, norm_w`` (``|w_i|``), ``norm`` (``|(a_i, w_i, b_i)|``),
    ``dist`` (``|theta_i(t) - theta_i(0)|``, distance traveled), ``u_<k>`` (the unit
    direction ``w_i / |w_i|``, only for d <= 3), ``active`` (fraction of the rows of ``x`` with
    ``w_i . x + b_i > 0``, if ``x`` is given) and ``cos_<name>`` (cosine between ``w_i`` and
    each vector of ``directions``, e.g. teacher neurons or class means).

    Args:
        traj: the trained :class:`Trajectory`.
        x: optional inputs ``(n, d)`` for the ``active`` column.
        directions: optional ``{name: vector of shape (d,)}`` for the ``cos_<name>`` columns.

    Returns:
        The tidy DataFrame.

    References:
        Chizat & Bach 2018; Mei, Montanari & Nguyen 2018 (neurons as particles).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> tr = gd(p, net, jnp.eye(2), jnp.array([1.0, -1.0]), lr=0.1, steps=2)
        >>> neurons(tr, directions={"e0": [1.0, 0.0]}).shape
        (8, 11)
    """
    p = {k: np.asarray(v) for k, v in traj.params.items()}
    r, m, d = p["w"].shape
    norm_w = np.linalg.norm(p["w"], axis=2)
    theta = np.concatenate([p["a"][..., None], p["w"], p["b"][..., None]], axis=2)
    cols = {"step": np.repeat(traj.history["step"].to_numpy(), m),
            "time": np.repeat(traj.history["time"].to_numpy(), m),
            "neuron": np.tile(np.arange(m), r), "a": p["a"].ravel(), "b": p["b"].ravel(),
            "norm_w": norm_w.ravel(), "norm": np.linalg.norm(theta, axis=2).ravel(),
            "dist": np.linalg.norm(theta - theta[:1], axis=2).ravel()}
    unit = p["w"] / np.where(norm_w > 0, norm_w, 1.0)[..., None]
    if d <= 3:
        for k in range(d):
            cols[f"u_{k}"] = unit[..., k].ravel()
    if x is not None:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != d:
            raise ShapeMismatchError(f"neurons: x must have shape (n, {d}), got {x.shape}")
        pre = np.einsum("rmd,nd->rmn", p["w"], x) + p["b"][..., None]
        cols["active"] = np.mean(pre > 0, axis=2).ravel()
    for name, v in (directions or {}).items():
        v = np.asarray(v, dtype=float)
        if v.shape != (d,):
            raise ShapeMismatchError(f"neurons: direction {name!r} must have shape ({d},), "
                                     f"got {v.shape}")
        cols[f"cos_{name}"] = (unit @ (v / np.linalg.norm(v))).ravel()
    return pd.DataFrame(cols)


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
