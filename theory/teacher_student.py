"""Online SGD in the teacher-student two-layer setting and its exact high-dimensional ODEs.

Student ``f(x) = sum_k v_k g(w_k . x / sqrt N)`` (K hidden units), teacher
``y = sum_m vt_m g(wt_m . x / sqrt N) + noise * zeta`` (M units), ``x ~ N(0, I_N)``, squared loss
``1/2 (f - y)^2``. One SGD step on a fresh sample:

    w_k <- w_k - lr / sqrt(N) * v_k Delta g'(lambda_k) x,
    v_k <- v_k - lr_v / N * Delta g(lambda_k)

with ``Delta = f(x) - y``, ``lambda_k = w_k . x / sqrt N`` (and ``nu_m`` the teacher fields).
With time ``t = step / N``, as N -> infinity the order parameters ``Q = w w^T / N``,
``R = w wt^T / N``, ``T = wt wt^T / N`` and ``v`` follow closed ODEs (Saad & Solla 1995,
"On-line learning in soft committee machines"; Goldt, Advani, Saxe, Krzakala & Zdeborova
2019, "Dynamics of stochastic gradient descent for two-layer neural networks in the
teacher-student setup", eqs. (9)-(11)). Writing ``u = (v, -vt)`` and ``phi`` the K + M local
fields with covariance ``C = [[Q, R], [R^T, T]]``:

    dR_kn/dt = -lr v_k sum_c u_c I3(k, n, c)
    dQ_kl/dt = -lr v_k sum_c u_c I3(k, l, c) - lr v_l sum_c u_c I3(l, k, c)
               + lr^2 v_k v_l (sum_{c,e} u_c u_e I4(k, l, c, e) + noise^2 J2(k, l))
    dv_k/dt  = -lr_v sum_c u_c I2(k, c)
    eps_g    = 1/2 sum_{c,e} u_c u_e I2(c, e)

with ``I2(a,b) = E[g(phi_a) g(phi_b)]``, ``I3(a,b,c) = E[g'(phi_a) phi_b g(phi_c)]``,
``I4(a,b,c,e) = E[g'(phi_a) g'(phi_b) g(phi_c) g(phi_e)]``, ``J2(a,b) = E[g'(phi_a) g'(phi_b)]``.

Activations:

* ``"erf"``: ``g(z) = erf(z / sqrt 2)``; I2, I3, I4, J2 in closed form (Saad & Solla 1995,
  Appendix; Biehl & Schwarze 1995). With ``C' = 1 + C``:
  ``I2 = 2/pi arcsin(C_ab / sqrt(C'_aa C'_bb))``, ``J2 = 2/pi / sqrt(C'_aa C'_bb - C_ab^2)``,
  ``I3 = 2/pi (C_bc C'_aa - C_ab C_ac) / (C'_aa sqrt(L3))``, ``L3 = C'_aa C'_cc - C_ac^2``,
  ``I4 = 4/pi^2 / sqrt(L4) arcsin(L0 / sqrt(L1 L2))`` (the ``L`` are given in ``_erf_i4``).
* ``"relu"``: I2 and J2 are the arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009), I3
  follows from Stein's lemma, ``I3 = C_ab E[delta(phi_a) relu(phi_c)] + C_bc J2(a, c)`` with
  ``E[delta(phi_a) relu(phi_c)] = sqrt(C_cc (1 - rho_ac^2)) / (2 pi sqrt(C_aa))``. The
  four-point ``I4 = E[phi_c phi_e 1{phi_S > 0}]`` (``S`` the distinct fields among a, b, c, e)
  is a truncated second moment of a Gaussian over the positive orthant
  (:mod:`dynkit.theory.gaussian_orthant`): Stein's lemma (Tallis 1961) reduces it to orthant
  probabilities of dimension <= 4, closed-form up to three dimensions (Sheppard) and a
  one-dimensional Gauss-Legendre integral in four (Plackett 1954). It is deterministic and
  accurate to ~1e-12 (checked against nested quadrature and Monte Carlo in the tests), but
  loses accuracy when two *different* fields become perfectly correlated (a student unit
  exactly equal to a teacher unit).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory.gaussian_orthant import orthant_moment2
from dynkit.theory.ode import record_times
from dynkit.validation import check_nonnegative, check_positive

__all__ = [
    "Simulation",
    "State",
    "generalization_error",
    "integrals",
    "ode",
    "order_parameters",
    "simulate",
]

_ACTS = ("erf", "relu")


@dataclass(frozen=True)
class State:
    """Order parameters of a student of K units and a teacher of M units.

    Args:
        Q: student-student overlaps ``w w^T / N``, shape ``(K, K)``.
        R: student-teacher overlaps ``w wt^T / N``, shape ``(K, M)``.
        T: teacher-teacher overlaps ``wt wt^T / N``, shape ``(M, M)``.
        v: the student's second-layer weights, shape ``(K,)``.
        v_teacher: the teacher's, shape ``(M,)``.

    References:
        Saad & Solla 1995, "On-line learning in soft committee machines"; Goldt, Advani, Saxe, Krzakala & Zdeborova 2019, "Dynamics of stochastic gradient
        descent for two-layer neural networks in the teacher-student setup".

    Example:
        >>> import numpy as np
        >>> s = State(Q=np.eye(1), R=np.zeros((1, 1)), T=np.eye(1), v=np.ones(1),
        ...           v_teacher=np.ones(1))
        >>> s.covariance.tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    v: np.ndarray
    v_teacher: np.ndarray

    def __post_init__(self):
        k, m = np.shape(self.R)
        shapes = {"Q": (k, k), "T": (m, m), "v": (k,), "v_teacher": (m,)}
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ShapeMismatchError(f"State: {name} must have shape {shape} (R is "
                                         f"{(k, m)}), got {np.shape(getattr(self, name))}")
        for name in ("Q", "R", "T", "v", "v_teacher"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise InvalidArgumentError(f"State: {name} must be finite")

    @property
    def covariance(self) -> np.ndarray:
        """Covariance of the K + M local fields, ``[[Q, R], [R^T, T]]``."""
        return np.block([[self.Q, self.R], [np.transpose(self.R), self.T]])


def order_parameters(w, w_teacher, v, v_teacher) -> State:
    """Order parameters ``Q = w w^T / N``, ``R = w wt^T / N``, ``T = wt wt^T / N`` of weights.

    Args:
        w: student first-layer weights ``(K, N)`` (rows = units).
        w_teacher: teacher first-layer weights ``(M, N)``.
        v, v_teacher: second-layer weights ``(K,)`` and ``(M,)``.

    Returns:
        The :class:`State`.

    References:
        Saad & Solla 1995; Goldt, Advani, Saxe, Krzakala & Zdeborova 2019, "Dynamics of stochastic gradient
        descent for two-layer neural networks in the teacher-student setup".

    Example:
        >>> import numpy as np
        >>> s = order_parameters(np.ones((1, 4)), 2 * np.ones((1, 4)), [1.0], [1.0])
        >>> float(s.Q[0, 0]), float(s.R[0, 0]), float(s.T[0, 0])
        (1.0, 2.0, 4.0)
    """
    w, wt = np.asarray(w, float), np.asarray(w_teacher, float)
    n = w.shape[1]
    return State(w @ w.T / n, w @ wt.T / n, wt @ wt.T / n, np.asarray(v, float),
                 np.asarray(v_teacher, float))


def _check_act(activation):
    if activation not in _ACTS:
        raise InvalidArgumentError(f"activation must be one of {_ACTS}, got {activation!r}")


# --- closed-form Gaussian integrals -----------------------------------------------------

def _erf_i2(c):
    d = 1.0 + jnp.diag(c)
    return 2 / jnp.pi * jnp.arcsin(c / jnp.sqrt(d[:, None] * d[None, :]))


def _erf_j2(c):
    d = 1.0 + jnp.diag(c)
    return 2 / jnp.pi / jnp.sqrt(d[:, None] * d[None, :] - c ** 2)


def _erf_i3(c):
    """``I3[a, b, e] = E[g'(phi_a) phi_b g(phi_e)]`` for all index triples."""
    d = 1.0 + jnp.diag(c)
    l3 = d[:, None] * d[None, :] - c ** 2                       # (a, e)
    num = c[None, :, :] * d[:, None, None] - c[:, :, None] * c[:, None, :]   # (a, b, e)
    return 2 / jnp.pi * num / (d[:, None, None] * jnp.sqrt(l3)[:, None, :])


def _erf_i4(c):
    """``I4[a, b, e, f] = E[g'(phi_a) g'(phi_b) g(phi_e) g(phi_f)]`` (Saad & Solla 1995)."""
    d = 1.0 + jnp.diag(c)
    c11 = d[:, None, None, None]
    c22 = d[None, :, None, None]
    c33 = d[None, None, :, None]
    c44 = d[None, None, None, :]
    c12 = c[:, :, None, None]
    c13 = c[:, None, :, None]
    c14 = c[:, None, None, :]
    c23 = c[None, :, :, None]
    c24 = c[None, :, None, :]
    c34 = c[None, None, :, :]
    l4 = c11 * c22 - c12 ** 2
    l0 = l4 * c34 - c23 * c24 * c11 - c13 * c14 * c22 + c12 * c13 * c24 + c12 * c14 * c23
    l1 = l4 * c33 - c23 ** 2 * c11 - c13 ** 2 * c22 + 2 * c12 * c13 * c23
    l2 = l4 * c44 - c24 ** 2 * c11 - c14 ** 2 * c22 + 2 * c12 * c14 * c24
    return 4 / jnp.pi ** 2 / jnp.sqrt(l4) * jnp.arcsin(l0 / jnp.sqrt(l1 * l2))


def _relu_parts(c):
    s = jnp.sqrt(jnp.diag(c))
    rho = jnp.clip(c / (s[:, None] * s[None, :]), -1.0, 1.0)
    theta = jnp.arccos(rho)
    return s, rho, theta


def _relu_i2(c):
    s, rho, theta = _relu_parts(c)
    return s[:, None] * s[None, :] * (jnp.sin(theta) + (jnp.pi - theta) * rho) / (2 * jnp.pi)


def _relu_j2(c):
    _, _, theta = _relu_parts(c)
    return (jnp.pi - theta) / (2 * jnp.pi)


def _relu_i3(c):
    s, rho, _ = _relu_parts(c)
    delta_relu = s[None, :] * jnp.sqrt(jnp.clip(1 - rho ** 2, 0.0)) / (2 * jnp.pi * s[:, None])
    return c.T[:, :, None] * delta_relu[:, None, :] + c[None, :, :] * _relu_j2(c)[:, None, :]


# --- ReLU four-point integral: truncated Gaussian moments over the positive orthant ----------

@functools.cache
def _i4_groups(f: int):
    """Index tuples ``(a, b, c, e)`` of ``f`` fields grouped by ``(n, k, l)``: the distinct fields
    (in order of appearance), and the positions ``k, l`` of ``c, e`` among them."""
    groups = {}
    for tup in itertools.product(range(f), repeat=4):
        uniq = tuple(dict.fromkeys(tup))
        key = (len(uniq), uniq.index(tup[2]), uniq.index(tup[3]))
        groups.setdefault(key, ([], []))
        groups[key][0].append(tup)
        groups[key][1].append(uniq)
    return {key: (np.array(t).T, np.array(u)) for key, (t, u) in groups.items()}


@jax.jit
def _relu_i4(c):
    """``I4[a, b, c, e] = E[g'(phi_a) g'(phi_b) g(phi_c) g(phi_e)] = E[phi_c phi_e 1{phi_S > 0}]``
    for ``g = relu``, ``S`` the distinct fields among ``a, b, c, e`` (``g'^2 = g'``, ``g' g = g``
    remove repeated fields, so the covariance of ``phi_S`` is non-singular in general):
    :func:`dynkit.theory.gaussian_orthant.orthant_moment2`, deterministic and accurate to ~1e-12.
    """
    f = c.shape[0]
    out = jnp.zeros((f,) * 4)
    for (_, k, l), (tuples, uniq) in _i4_groups(f).items():
        sub = c[uniq[:, :, None], uniq[:, None, :]]
        out = out.at[tuple(tuples)].set(orthant_moment2(sub, k, l))
    return out


def integrals(cov, activation: str = "erf") -> dict:
    """The Gaussian integrals ``I2, J2, I3, I4`` for all index tuples of the fields with
    covariance ``cov`` (formulas in the module docstring).

    Args:
        cov: the ``(F, F)`` covariance of the local fields (:attr:`State.covariance`).
        activation: ``"erf"`` or ``"relu"``.

    Returns:
        ``{"I2": (F, F), "J2": (F, F), "I3": (F, F, F), "I4": (F, F, F, F)}`` arrays.

    References:
        Saad & Solla 1995, Appendix; Biehl & Schwarze 1995; Cho & Saul 2009 (ReLU); Tallis
        1961 and Plackett 1954 (ReLU ``I4``).

    Example:
        >>> import numpy as np
        >>> ints = integrals(np.eye(2), "relu")
        >>> round(float(ints["I2"][0, 0]), 6), round(float(ints["J2"][0, 1]), 6)  # 1/2, 1/4
        (0.5, 0.25)
    """
    _check_act(activation)
    c = jnp.asarray(cov, float)
    if activation == "erf":
        return {"I2": _erf_i2(c), "J2": _erf_j2(c), "I3": _erf_i3(c), "I4": _erf_i4(c)}
    return {"I2": _relu_i2(c), "J2": _relu_j2(c), "I3": _relu_i3(c), "I4": _relu_i4(c)}


def generalization_error(state: State, activation: str = "erf") -> float:
    """The generalization error ``eps_g = 1/2 E[(f - y)^2]`` (noise-free) ``= 1/2 u^T I2 u``,
    ``u = (v, -v_teacher)``.

    Args:
        state: the order parameters.
        activation: ``"erf"`` or ``"relu"``.

    Returns:
        ``eps_g``, a float.

    References:
        Saad & Solla 1995; Goldt, Advani, Saxe, Krzakala & Zdeborova 2019, "Dynamics of stochastic gradient
        descent for two-layer neural networks in the teacher-student setup", eq. (8).

    Example:
        >>> import numpy as np
        >>> s = State(Q=np.eye(1), R=np.eye(1), T=np.eye(1), v=np.ones(1), v_teacher=np.ones(1))
        >>> generalization_error(s)   # student equals teacher
        0.0
    """
    _check_act(activation)
    u = np.concatenate([state.v, -np.asarray(state.v_teacher)])
    i2 = _relu_i2(jnp.asarray(state.covariance)) if activation == "relu" else \
        _erf_i2(jnp.asarray(state.covariance))
    return float(0.5 * u @ np.asarray(i2) @ u)


def _unpack(y, k: int, m: int):
    q = y[: k * k].reshape(k, k)
    r = y[k * k: k * k + k * m].reshape(k, m)
    return q, r, y[k * k + k * m:]


@functools.partial(jax.jit, static_argnames=("activation",))
def _rhs(q, r, v, t_mat, vt, rates, activation):
    """``(dQ/dt, dR/dt, dv/dt)`` (module docstring); ``rates = (lr, lr_v, noise)``. Compiled
    once per (K, M, activation) and reused across calls."""
    lr, lr_v, noise = rates
    k = q.shape[0]
    q = (q + q.T) / 2            # Q is symmetric; keeps the antisymmetric part from drifting
    c = jnp.block([[q, r], [r.T, t_mat]])
    if activation == "erf":
        i2, j2, i3, i4 = _erf_i2(c), _erf_j2(c), _erf_i3(c), _erf_i4(c)
    else:
        i2, j2, i3, i4 = _relu_i2(c), _relu_j2(c), _relu_i3(c), _relu_i4(c)
    u = jnp.concatenate([v, -vt])
    drive = jnp.einsum("abe,e->ab", i3[:k], u)          # sum_c u_c I3(k, b, c)
    dr = -lr * v[:, None] * drive[:, k:]
    dq_lin = -lr * v[:, None] * drive[:, :k]
    quad = jnp.einsum("klef,e,f->kl", i4[:k, :k], u, u) + noise ** 2 * j2[:k, :k]
    dq = dq_lin + dq_lin.T + lr ** 2 * v[:, None] * v[None, :] * quad
    return dq, dr, -lr_v * i2[:k] @ u


def ode(state0: State, *, lr: float, times, activation: str = "erf", noise: float = 0.0,
        lr_v: float | None = None, rtol: float = 1e-7, atol: float = 1e-9) -> pd.DataFrame:
    """Integrate the order-parameter ODEs (module docstring) from ``state0``.

    ``lr_v`` is the second-layer rate (``None``: equal to ``lr``; ``0``: fixed second layer,
    the soft committee machine of Saad & Solla). Integrated with ``scipy.integrate.solve_ivp``
    (RK45, local error below ``atol + rtol |y|``).

    Args:
        state0: the initial order parameters.
        lr: the first-layer learning rate.
        times: record times (>= 0, increasing), in units of ``step / N``.
        activation: ``"erf"`` or ``"relu"``.
        noise: the label noise standard deviation.
        lr_v: the second-layer rate (default ``lr``).
        rtol, atol: the integrator's tolerances.

    Returns:
        DataFrame, one row per time: ``time, eg`` and the order parameters ``Q_k_l`` (k <= l),
        ``R_k_n``, ``v_k``.

    References:
        Saad & Solla 1995; Goldt, Advani, Saxe, Krzakala & Zdeborova 2019, "Dynamics of stochastic gradient
        descent for two-layer neural networks in the teacher-student setup", eqs. (9)-(11).

    Example:
        >>> import numpy as np
        >>> s0 = State(Q=0.1 * np.eye(1), R=np.zeros((1, 1)), T=np.eye(1), v=np.ones(1),
        ...            v_teacher=np.ones(1))
        >>> df = ode(s0, lr=1.0, times=[0.0, 1.0])
        >>> list(df.columns), bool(df["eg"].iloc[1] < df["eg"].iloc[0])
        (['time', 'eg', 'Q_0_0', 'R_0_0', 'v_0'], True)
    """
    from scipy.integrate import solve_ivp

    _check_act(activation)
    lr = check_positive("ode: lr", lr)
    lr_v = lr if lr_v is None else check_nonnegative("ode: lr_v", lr_v)
    noise = check_nonnegative("ode: noise", noise)
    times = record_times(times, "ode")
    k, m = np.shape(state0.R)
    fixed = (jnp.asarray(state0.T, float), jnp.asarray(state0.v_teacher, float),
             jnp.asarray([lr, lr_v, noise]))

    def rhs(_, y):
        return np.concatenate([np.ravel(d) for d in _rhs(*_unpack(y, k, m), *fixed, activation)])

    y0 = np.concatenate([np.ravel(state0.Q), np.ravel(state0.R), np.ravel(state0.v)])
    sol = solve_ivp(rhs, (times[0], times[-1]), y0, t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise InvalidArgumentError(f"ode: integration failed: {sol.message}")
    states = []
    for y in sol.y.T:
        q, r, v = _unpack(y, k, m)
        states.append(State(q, r, state0.T, v, state0.v_teacher))
    return _table(times, states, activation)


def _table(times, states, activation) -> pd.DataFrame:
    rows = []
    for t, s in zip(times, states):
        row = {"time": float(t), "eg": generalization_error(s, activation)}
        k, m = s.R.shape
        row.update({f"Q_{a}_{b}": s.Q[a, b] for a in range(k) for b in range(a, k)})
        row.update({f"R_{a}_{n}": s.R[a, n] for a in range(k) for n in range(m)})
        row.update({f"v_{a}": s.v[a] for a in range(k)})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Simulation:
    """Online-SGD runs returned by :func:`simulate`.

    Args:
        history: one row per (seed, time); the columns of :func:`ode` (order parameters
            measured on the weights) and ``seed``.
        initial: the measured initial :class:`State` of each seed (start :func:`ode` from it).

    References:
        Goldt, Advani, Saxe, Krzakala & Zdeborova 2019, "Dynamics of stochastic gradient
        descent for two-layer neural networks in the teacher-student setup".

    Example:
        >>> Simulation(history=None, initial=()).initial
        ()
    """

    history: pd.DataFrame
    initial: tuple


def simulate(key, *, dim: int, student: int, teacher: int, lr: float, times,
             activation: str = "erf", noise: float = 0.0, lr_v: float | None = None,
             init_scale: float = 0.1, init_overlap: float = 0.0, v0=None, v_teacher=None,
             seeds: int = 1) -> Simulation:
    """Online SGD (module docstring) at input dimension ``dim`` for ``seeds`` independent runs
    (vectorized with ``vmap``); record at ``times`` (units of ``step / dim``, equally spaced from 0,
    rounded to whole steps).

    Teacher rows ``wt_m ~ N(0, I)``; student rows ``w_k = init_overlap * wt_k + init_scale * xi_k``
    with ``xi_k ~ N(0, I)`` (the overlap term only for ``k < min(K, M)``); ``v0`` and
    ``v_teacher`` default to ones. Each step draws a fresh ``x ~ N(0, I_dim)``. ``eg`` is the
    exact population error of the current weights (:func:`generalization_error`).

    ``init_overlap > 0`` is a partially informed start ``R(0) ~ init_overlap * I``: it breaks
    the student-teacher permutation symmetry deterministically. The symmetric plateau then ends
    after ``~ ln(1 / init_overlap) / lambda`` (``lambda`` its unstable rate; Biehl, Riegler &
    Woehler 1996), whereas from an uninformed start the escape is seeded by O(1/sqrt(dim))
    asymmetries of the initial weights *and* of the SGD noise, so a single run's escape time
    fluctuates by O(1/lambda) at any finite ``dim``.

    Args:
        key: the PRNG key (split over seeds).
        dim: the input dimension ``N``.
        student, teacher: the numbers of hidden units K and M.
        lr: the first-layer learning rate.
        times: record times, starting at 0 and equally spaced in whole steps of ``1/dim``.
        activation: ``"erf"`` or ``"relu"``.
        noise: the label noise standard deviation.
        lr_v: the second-layer rate (default ``lr``; 0 fixes the second layer).
        init_scale: the scale of the random part of the student's weights.
        init_overlap: the teacher component of the student's initial weights.
        v0, v_teacher: second-layer weights (default: ones).
        seeds: the number of independent runs.

    Returns:
        The :class:`Simulation`.

    References:
        Saad & Solla 1995; Goldt, Advani, Saxe, Krzakala & Zdeborova 2019, "Dynamics of stochastic gradient
        descent for two-layer neural networks in the teacher-student setup"; Biehl, Riegler & Woehler 1996,
        "Transient dynamics of on-line learning in two-layered neural networks".

    Example:
        >>> import jax
        >>> sim = simulate(jax.random.PRNGKey(0), dim=4, student=1, teacher=1, lr=1.0,
        ...                times=[0.0, 0.5])
        >>> sim.history.shape, len(sim.initial)
        ((2, 6), 1)
    """
    _check_act(activation)
    for name, val in (("dim", dim), ("student", student), ("teacher", teacher),
                      ("seeds", seeds)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise InvalidArgumentError(f"simulate: {name} must be a positive integer, got "
                                       f"{val!r}")
    lr = check_positive("simulate: lr", lr)
    lr_v = lr if lr_v is None else check_nonnegative("simulate: lr_v", lr_v)
    noise = check_nonnegative("simulate: noise", noise)
    check_positive("simulate: init_scale", init_scale)
    overlap = float(init_overlap)
    if not math.isfinite(overlap):
        raise InvalidArgumentError(f"simulate: init_overlap must be finite, got {init_overlap!r}")
    times = record_times(times, "simulate")
    steps = np.rint(times * dim).astype(int)
    gap = int(steps[1] - steps[0])
    if steps[0] != 0 or np.any(np.diff(steps) != gap):
        raise InvalidArgumentError("simulate: times must start at 0 and be equally spaced "
                                   f"(in whole steps of 1/dim), got {times!r}")
    v = jnp.ones(student) if v0 is None else jnp.asarray(v0, float)
    vt = jnp.ones(teacher) if v_teacher is None else jnp.asarray(v_teacher, float)
    g = jax.nn.relu if activation == "relu" else (lambda z: jax.scipy.special.erf(z / 2 ** 0.5))
    dg = jax.vmap(jax.grad(g))
    sq = dim ** 0.5

    def one_run(k):
        kt, ks, kr = jax.random.split(k, 3)
        wt = jax.random.normal(kt, (teacher, dim))
        w = init_scale * jax.random.normal(ks, (student, dim))
        shared = min(student, teacher)
        w = w.at[:shared].add(overlap * wt[:shared])

        def step(carry, xz):
            w, v = carry
            x, zeta = xz
            lam, nu = w @ x / sq, wt @ x / sq
            delta = v @ g(lam) - vt @ g(nu) - noise * zeta
            w = w - (lr / sq) * (v * delta * dg(lam))[:, None] * x[None, :]
            v = v - (lr_v / dim) * delta * g(lam)
            return (w, v), None

        def block(carry, k):
            kx, kn = jax.random.split(k)
            xs = jax.random.normal(kx, (gap, dim))          # one block of fresh samples
            carry, _ = jax.lax.scan(step, carry, (xs, jax.random.normal(kn, (gap,))), unroll=4)
            return carry, carry

        _, (ws, vs) = jax.lax.scan(block, (w, v), jax.random.split(kr, len(steps) - 1))
        return wt, jnp.concatenate([w[None], ws]), jnp.concatenate([v[None], vs])

    wts, ws, vs = (np.asarray(a) for a in jax.jit(jax.vmap(one_run))(
        jax.random.split(key, seeds)))
    tables, initial = [], []
    for s in range(seeds):
        states = [order_parameters(wi, wts[s], vi, vt) for wi, vi in zip(ws[s], vs[s])]
        tables.append(_table(steps / dim, states, activation).assign(seed=s))
        initial.append(states[0])
    return Simulation(pd.concat(tables, ignore_index=True), tuple(initial))
