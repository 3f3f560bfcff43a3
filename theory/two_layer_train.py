"""Trainers of the two-layer network of :mod:`dynkit.theory.two_layer_net`: full-batch GD,
minibatch and online SGD, Langevin dynamics and adaptive gradient flow, all recorded into a
:class:`Trajectory`, plus the per-neuron table ``neurons``.

All discrete trainers run a ``lax.scan`` over record points with a ``lax.fori_loop`` of steps
inside (no Python per-step loop); ``time = step * lr`` in the time units of ``lr_scale``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory.ode import dopri5, record_times
from dynkit.theory.two_layer_net import LOSSES, TwoLayer, check_data, effective_rank, lr_scale
from dynkit.theory.two_layer_net import loss as objective
from dynkit.validation import check_integer, check_nonnegative, check_positive

__all__ = ["Trajectory", "gd", "gradient_flow", "langevin", "neurons", "online_sgd", "sgd"]


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
        >>> from dynkit.theory.two_layer import TwoLayer, init
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


def _flat_norm(p: dict) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree_util.tree_leaves(p)))


@functools.partial(jax.jit, static_argnames=("net", "kind"))
def _history_arrays(stacked, x, y, x_test, y_test, *, net, kind):
    p0 = jax.tree_util.tree_map(lambda p: p[0], stacked)
    n0 = _flat_norm(p0)

    def row(p):
        pre = x @ p["w"].T + p["b"]
        diff = jax.tree_util.tree_map(jnp.subtract, p, p0)
        out = [objective(p, net, x, y, kind), jnp.mean(jnp.any(pre > 0, axis=0)),
               effective_rank(p["w"]), _flat_norm(diff) / n0]
        out.append(objective(p, net, x_test, y_test, kind) if x_test is not None
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
    grad = jax.grad(objective)
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
    lr = check_positive(f"{where}: lr", lr)
    steps = check_integer(f"{where}: steps", steps)
    record_every = check_integer(f"{where}: record_every", record_every or steps)
    if steps % record_every:
        raise InvalidArgumentError(f"{where}: steps ({steps}) must be a multiple of "
                                   f"record_every ({record_every})")
    weight_decay = check_nonnegative(f"{where}: weight_decay", weight_decay)
    temperature = check_nonnegative(f"{where}: temperature", temperature)
    if loss_kind not in LOSSES:
        raise InvalidArgumentError(f"{where}: loss must be one of {LOSSES}, got {loss_kind!r}")
    x, y = check_data(x, y, where)
    if x_test is not None:
        x_test, y_test = check_data(x_test, y_test, where + " (test)")
    if params["w"].shape != (net.width, x.shape[1]):
        raise ShapeMismatchError(f"{where}: params['w'] has shape {params['w'].shape}, expected "
                                 f"(width={net.width}, d={x.shape[1]})")
    n = x.shape[0]
    if batch_size is not None:
        batch_size = check_integer(f"{where}: batch_size", batch_size)
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
        >>> from dynkit.theory.two_layer import TwoLayer, init
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
        >>> from dynkit.theory.two_layer import TwoLayer, init
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
        >>> from dynkit.theory.two_layer import TwoLayer, init
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
        >>> from dynkit.theory.two_layer import TwoLayer, init
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
        >>> from dynkit.theory.two_layer import TwoLayer, init
        >>> net = TwoLayer(width=4)
        >>> p = init(jax.random.PRNGKey(0), net, dim=2)
        >>> tr = gradient_flow(p, net, jnp.eye(2), jnp.array([1.0, -1.0]), [0.0, 0.5, 1.0])
        >>> tr.history["time"].tolist()
        [0.0, 0.5, 1.0]
    """
    times = record_times(times, "gradient_flow", from_zero=True)
    weight_decay = check_nonnegative("gradient_flow: weight_decay", weight_decay)
    x, y = check_data(x, y, "gradient_flow")
    if x_test is not None:
        x_test, y_test = check_data(x_test, y_test, "gradient_flow (test)")
    if loss not in LOSSES:
        raise InvalidArgumentError(f"gradient_flow: loss must be one of {LOSSES}, got {loss!r}")
    if not net.bias:
        params = dict(params, b=jnp.zeros_like(params["b"]))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    eta = lr_scale(net)
    mask = jax.flatten_util.ravel_pytree(
        {"a": jnp.ones_like(params["a"]), "b": jnp.full_like(params["b"], float(net.bias)),
         "w": jnp.ones_like(params["w"])})[0]

    def field(theta):
        g = jax.grad(objective)(unravel(theta), net, x, y, loss)
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
        >>> from dynkit.theory.two_layer import TwoLayer, init
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
