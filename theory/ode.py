"""Numerical integration of ordinary differential equations ``dy/dt = field(y)``.

``dopri5`` is the adaptive Dormand-Prince 5(4) method, jitted end to end, that integrates the
gradient flow of :func:`dynkit.theory.two_layer.gradient_flow`; ``record_times`` checks the
grid of record times shared by the ODEs of :mod:`dynkit.theory.two_layer` and
:mod:`dynkit.theory.teacher_student`. (The order-parameter ODEs of ``teacher_student`` are
integrated by ``scipy.integrate.solve_ivp``'s RK45, the same Dormand-Prince pair with its own
step-size control and dense output, on the host.)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError

__all__ = ["dopri5", "record_times"]

_DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def dopri5(field: Callable, y0, times, rtol: float = 1e-8, atol: float = 1e-10,
           max_steps: int = 100_000):
    """Adaptive Dormand-Prince 5(4) integration of ``dy/dt = field(y)``, jitted end to end
    (``lax.scan`` over the record times, ``lax.while_loop`` of adaptive steps in between).

    A step is accepted when ``rms(err / (atol + rtol max(|y|, |y_new|))) <= 1`` with ``err``
    the difference of the embedded 5th/4th-order solutions; the step size then changes by
    ``clip(0.9 err^(-1/5), 0.2, 5)``. Steps end exactly on the record times (no
    interpolation); the first step is ``(times[-1] - times[0]) / 1000``.

    Args:
        field: the autonomous vector field ``y -> dy/dt`` (a JAX function of one array).
        y0: the initial value ``y(times[0])``, an array.
        times: increasing record times (``times[0]`` is the start).
        rtol, atol: relative and absolute local error tolerances.
        max_steps: the most adaptive steps (accepted or rejected) in all.

    Returns:
        ``(ys, n_steps)``: ``ys[j]`` the solution at ``times[j]`` (``ys[0] = y0``) and the
        number of step attempts; ``n_steps`` reaching ``max_steps`` means the integration did
        not finish.

    References:
        Dormand & Prince 1980, "A family of embedded Runge-Kutta formulae"; Hairer, Norsett &
        Wanner, Solving Ordinary Differential Equations I, Sec. II.4-II.5.

    Example:
        >>> import jax.numpy as jnp
        >>> ys, n = dopri5(lambda y: -y, jnp.array([1.0]), jnp.array([0.0, 1.0]))
        >>> bool(jnp.abs(ys[-1, 0] - jnp.exp(-1.0)) < 1e-6)
        True
    """
    times = jnp.asarray(times)

    def attempt(y, h):
        ks = []
        for i in range(7):
            yi = y if i == 0 else y + h * sum(a * k for a, k in zip(
                (_DP_A[i] if i < 6 else _DP_B5[:6]), ks))
            ks.append(field(yi))
        y5 = y + h * sum(b * k for b, k in zip(_DP_B5, ks))
        err = h * sum((b5 - b4) * k for b5, b4, k in zip(_DP_B5, _DP_B4, ks))
        scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y5))
        return y5, jnp.sqrt(jnp.mean((err / scale) ** 2))

    def segment(carry, t_next):
        y, t, h, n = carry

        def cond(c):
            return (c[1] < t_next) & (c[3] < max_steps)

        def body(c):
            y, t, h, n = c
            last = h >= t_next - t
            hs = jnp.where(last, t_next - t, h)
            y_new, e = attempt(y, hs)
            ok = e <= 1.0
            factor = jnp.clip(0.9 * jnp.where(e > 0, e, 1e-10) ** -0.2, 0.2, 5.0)
            t_new = jnp.where(last, t_next, t + hs)
            return (jnp.where(ok, y_new, y), jnp.where(ok, t_new, t), hs * factor, n + 1)

        y, t, h, n = jax.lax.while_loop(cond, body, (y, t, h, n))
        return (y, t, h, n), y

    h0 = (times[-1] - times[0]) * 1e-3
    (_, _, _, n), ys = jax.lax.scan(segment, (y0, times[0], h0, 0), times[1:])
    return jnp.concatenate([y0[None], ys]), n


def record_times(times, where: str, from_zero: bool = False) -> np.ndarray:
    """``times`` as a float array of record times: one-dimensional, at least two, finite and
    increasing, starting at 0 (``from_zero``) or at any time >= 0.

    Args:
        times: the record times, any array-like.
        where: the calling function, named in the error.
        from_zero: require ``times[0] == 0``.

    Returns:
        ``np.asarray(times, float)``.

    Raises:
        InvalidArgumentError: when ``times`` is not such a grid.

    References:
        Saad & Solla 1995, "On-line learning in soft committee machines" and Mei, Montanari
        & Nguyen 2018 (the ODEs whose record times it checks).

    Example:
        >>> record_times([0, 0.5, 2], "ode").tolist()
        [0.0, 0.5, 2.0]
    """
    times = np.asarray(times, float)
    bad = times.ndim != 1 or times.size < 2 or np.any(np.diff(times) <= 0) \
        or not np.all(np.isfinite(times))
    if from_zero:
        if bad or times[0] != 0:
            raise InvalidArgumentError(f"{where}: times must be finite, increasing and start "
                                       f"at 0, got {times!r}")
    elif bad or times[0] < 0:
        raise InvalidArgumentError(f"{where}: times must be finite, non-negative and "
                                   f"increasing, got {times!r}")
    return times
