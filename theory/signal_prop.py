r"""Signal propagation in deep random networks: length and correlation maps, the order-to-chaos
transition and depth scales, for any activation given as a JAX function.

A fully connected network with weights :math:`W_{ij}\sim N(0, \sigma_w^2/N)` and biases
:math:`b_i\sim N(0,\sigma_b^2)` propagates, at infinite width (Poole et al. 2016, "Exponential
expressivity in deep neural networks through transient chaos"; Schoenholz et al. 2017, "Deep
Information Propagation"):

* the length map :math:`q^{l} = \sigma_w^2\int Dz\,\phi(\sqrt{q^{l-1}}z)^2 + \sigma_b^2`,
  with fixed point :math:`q^*`;
* the correlation map :math:`c^{l} = \frac{1}{q^*}\left[\sigma_w^2\int Dz_1Dz_2\,
  \phi(u_1)\phi(u_2) + \sigma_b^2\right]`, :math:`u_1=\sqrt{q^*}z_1`,
  :math:`u_2=\sqrt{q^*}(cz_1+\sqrt{1-c^2}z_2)`;
* :math:`\chi_1 = \sigma_w^2\int Dz\,\phi'(\sqrt{q^*}z)^2`, the slope of the correlation map at
  :math:`c=1`; :math:`\chi_1 = 1` is the edge of chaos.

Gaussian integrals use Gauss-Hermite quadrature (probabilists' Hermite weights), derivatives of
:math:`\phi` use JAX autodiff. When :math:`q^* = 0` (e.g. odd activations without bias in the
ordered phase) quantities at :math:`q^*` are the limits :math:`q\to 0^+`, evaluated at
``Q_MIN``; when the length map has no finite fixed point (``q_star`` is ``inf``, e.g. ReLU with
:math:`\sigma_w^2\ge 2`) they are evaluated at ``Q_MAX``. For positively homogeneous
activations (ReLU) these limits are exact.

Accuracy: with the default 200 nodes, one-dimensional averages of smooth activations (erf, tanh)
are exact to machine precision, and those of ReLU exactly (symmetric nodes). The two-dimensional
average in the correlation map sees an oblique kink for ReLU-like activations and converges only
as O(1/degree) there (about 3e-4 absolute at 200 nodes); smooth activations stay at machine
precision. Closed forms for ReLU-type maps are in :mod:`dynkit.theory.symbolic`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import optimize

from dynkit.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_DEGREE",
    "Q_MAX",
    "Q_MIN",
    "DepthScales",
    "c_star",
    "chi1",
    "correlation_map",
    "critical_line",
    "depth_scales",
    "depth_scales_table",
    "gauss_hermite",
    "length_map",
    "q_star",
]

Q_MIN = 1e-12
Q_MAX = 1e12
DEFAULT_DEGREE = 200


@dataclasses.dataclass(frozen=True)
class DepthScales:
    """Fixed points, slopes and depth scales of one :math:`(\\sigma_w^2, \\sigma_b^2)` point.

    ``chi_q`` is the slope of the length map at :math:`q^*`, ``chi_c`` that of the correlation
    map at its stable fixed point :math:`c^*`; ``xi_q = -1/log(chi_q)``,
    ``xi_c = -1/log(chi_c)`` (Schoenholz et al. 2017, eqs. 4-9), ``inf`` at criticality.

    Args:
        sw2, sb2: the weight and bias variances :math:`\\sigma_w^2, \\sigma_b^2`.
        q_star, c_star: the fixed points of the length and correlation maps.
        chi1, chi_q, chi_c: the slopes (``chi1`` at :math:`c = 1`).
        xi_q, xi_c: the depth scales.

    References:
        Schoenholz et al. 2017, "Deep information propagation", eqs. 4-9.

    Example:
        >>> import jax
        >>> ds = depth_scales(1.0, 0.0, jax.nn.relu, degree=20)
        >>> round(ds.chi1, 4), ds.c_star, round(ds.xi_c, 4)   # xi_c = -1 / log(1/2)
        (0.5, 1.0, 1.4427)
    """

    sw2: float
    sb2: float
    q_star: float
    c_star: float
    chi1: float
    chi_q: float
    chi_c: float
    xi_q: float
    xi_c: float


def gauss_hermite(degree: int = DEFAULT_DEGREE) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes and weights with :math:`\sum_i w_i f(z_i) \approx E_{z\sim N(0,1)} f(z)`; exact for
    polynomials of degree :math:`< 2\,\mathrm{degree}`.

    Args:
        degree: the number of nodes.

    Returns:
        ``(z, w)``, two arrays of length ``degree`` (probabilists' Hermite nodes, weights
        summing to 1).

    References:
        Golub & Welsch 1969, "Calculation of Gauss quadrature rules".

    Example:
        >>> z, w = gauss_hermite(5)
        >>> round(float(w @ z**2), 12), round(float(w @ z**4), 12)   # E z^2, E z^4
        (1.0, 3.0)
    """
    if int(degree) < 1:
        raise InvalidArgumentError(f"degree must be a positive integer; got {degree}.")
    z, w = np.polynomial.hermite_e.hermegauss(int(degree))
    return z, w / np.sqrt(2.0 * np.pi)


def _check(sw2, sb2, activation):
    for name, v in (("sw2", sw2), ("sb2", sb2)):
        if not np.isfinite(v) or v < 0:
            raise InvalidArgumentError(f"{name} must be a finite number >= 0; got {v}.")
    _check_activation(activation)


def _check_activation(activation):
    if not callable(activation):
        raise InvalidArgumentError(f"activation must be a callable (a JAX function); got "
                                   f"{type(activation).__name__}.")


def _clip_q(q):
    return float(np.clip(q, Q_MIN, Q_MAX))


@functools.lru_cache(maxsize=64)
def _compiled(activation, degree):
    """Jitted Gaussian averages for one activation: ``moments(q)`` gives
    ``(E phi^2, E phi'^2, E phi'' phi)`` at ``sqrt(q) z``; ``pair(q, c, k)`` gives
    ``E phi^(k)(u1) phi^(k)(u2)`` (k = 0, 1) for unit-correlation ``c`` pairs of variance ``q``.
    Built and called under ``jax.enable_x64`` (``_moments``, ``_pair``): float64."""
    z, w = (jnp.asarray(a) for a in gauss_hermite(degree))
    d1 = jax.vmap(jax.grad(lambda x: activation(x)))
    d2 = jax.vmap(jax.grad(jax.grad(lambda x: activation(x))))

    @jax.jit
    def moments(q):
        x = jnp.sqrt(q) * z
        f, f1, f2 = activation(x), d1(x), d2(x)
        return jnp.stack([w @ f**2, w @ f1**2, w @ (f2 * f)])

    z1, z2 = (a.ravel() for a in jnp.meshgrid(z, z, indexing="ij"))
    ww = jnp.outer(w, w).ravel()

    @jax.jit
    def pair(q, c):
        u1 = jnp.sqrt(q) * z1
        u2 = jnp.sqrt(q) * (c * z1 + jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0)) * z2)
        return jnp.stack([ww @ (activation(u1) * activation(u2)), ww @ (d1(u1) * d1(u2))])

    return moments, pair


def _moments(activation, q, degree):
    # float64 whatever JAX's default: just inside the chaotic phase the correlation map stays
    # within ~1e-7 of the identity between c* and 1, so float32 rounding hides where it crosses
    with jax.enable_x64(True):
        return np.asarray(_compiled(activation, int(degree))[0](float(q)))


def _pair(activation, q, c, degree):
    with jax.enable_x64(True):
        return np.asarray(_compiled(activation, int(degree))[1](float(q), float(c)))


def length_map(q, sw2: float, sb2: float, activation: Callable,
               degree: int = DEFAULT_DEGREE) -> float:
    r"""One layer of the length map, :math:`q \mapsto \sigma_w^2 E_z[\phi(\sqrt q z)^2] +
    \sigma_b^2`, :math:`z \sim N(0, 1)`.

    Args:
        q: the pre-activation variance of the previous layer, finite and >= 0.
        sw2, sb2: the weight and bias variances.
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        degree: Gauss-Hermite nodes.

    Returns:
        The next layer's variance, a float.

    References:
        Poole et al. 2016, "Exponential expressivity in deep neural networks through
        transient chaos", eq. 3.

    Example:
        >>> import jax
        >>> round(length_map(3.0, 2.0, 0.1, jax.nn.relu, degree=20), 5)   # sw2 q / 2 + sb2
        3.1
    """
    _check(sw2, sb2, activation)
    if not np.isfinite(q) or q < 0:
        raise InvalidArgumentError(f"q must be a finite number >= 0; got {q}.")
    return float(sw2 * _moments(activation, q, degree)[0] + sb2)


def q_star(sw2: float, sb2: float, activation: Callable, degree: int = DEFAULT_DEGREE) -> float:
    r"""Fixed point :math:`q^* = \sigma_w^2 E[\phi(\sqrt{q^*}z)^2] + \sigma_b^2` of the length map.

    Found by bracketing :math:`g(q) = \mathcal{L}(q) - q` from :math:`q = 0` upwards (doubling)
    and Brent's method: the first crossing, which is the attracting fixed point reached by
    iterating an increasing length map from small :math:`q`. Returns 0 if :math:`g \le 0` just
    above 0 (the trivial fixed point is stable) and ``inf`` if no crossing below ``Q_MAX``.

    Args:
        sw2, sb2: the weight and bias variances.
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        degree: Gauss-Hermite nodes.

    Returns:
        :math:`q^*`, a float (0 or ``inf`` in the degenerate cases above).

    References:
        Poole et al. 2016, eq. 3 and Fig. 1.

    Example:
        >>> import jax
        >>> round(q_star(1.0, 0.5, jax.nn.relu, degree=20), 5)   # q = q / 2 + 1/2
        1.0
    """
    _check(sw2, sb2, activation)

    def g(q):
        return length_map(q, sw2, sb2, activation, degree) - q

    lo = 0.0
    if g(0.0) <= 0.0:
        lo = Q_MIN
        if g(lo) <= 0.0:
            return 0.0
    hi = max(1.0, 2.0 * lo)
    while g(hi) > 0.0:
        lo, hi = hi, 2.0 * hi
        if hi > Q_MAX:
            return float("inf")
    return float(optimize.brentq(g, lo, hi, xtol=1e-14, rtol=1e-13, maxiter=200))


def correlation_map(c, q_star_value: float, sw2: float, sb2: float, activation: Callable,
                    degree: int = DEFAULT_DEGREE) -> float:
    r"""One layer of the correlation map at the length fixed point (Poole et al. 2016, eq. 5):

    .. math:: c \mapsto \frac{1}{q^*}\left[\sigma_w^2 E\,\phi(u_1)\phi(u_2) + \sigma_b^2\right],
       \quad u_1 = \sqrt{q^*}z_1,\ u_2 = \sqrt{q^*}(c z_1 + \sqrt{1-c^2}z_2).

    Uses a tensor-product Gauss-Hermite rule with ``degree**2`` nodes.

    Args:
        c: the input correlation, in [-1, 1].
        q_star_value: the length fixed point :math:`q^*` (:func:`q_star`).
        sw2, sb2: the weight and bias variances.
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        degree: Gauss-Hermite nodes per dimension.

    Returns:
        The output correlation, a float.

    References:
        Poole et al. 2016, eq. 5.

    Example:
        >>> import jax.numpy as jnp
        >>> round(correlation_map(1.0, 1.0, 1.5, 0.2, jnp.tanh, degree=20)
        ...       - correlation_map(1.0, 1.0, 1.5, 0.2, jnp.tanh, degree=20), 12)
        0.0
        >>> abs(correlation_map(0.0, 1.0, 1.0, 0.0, jnp.tanh, degree=20)) < 1e-6  # odd phi
        True
    """
    _check(sw2, sb2, activation)
    if not -1.0 <= c <= 1.0:
        raise InvalidArgumentError(f"c must lie in [-1, 1]; got {c}.")
    return float((sw2 * _pair(activation, _clip_q(q_star_value), c, degree)[0] + sb2)
                 / _clip_q(q_star_value))


def chi1(sw2: float, sb2: float, activation: Callable, degree: int = DEFAULT_DEGREE,
         q_star_value: float | None = None) -> float:
    r""":math:`\chi_1 = \sigma_w^2 E_z[\phi'(\sqrt{q^*}z)^2]` (Poole et al. 2016, eq. 7): the
    slope of the correlation map at :math:`c = 1`; ordered phase for :math:`\chi_1<1`, chaotic
    for :math:`\chi_1>1`.

    Args:
        sw2, sb2: the weight and bias variances.
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        degree: Gauss-Hermite nodes.
        q_star_value: :math:`q^*` if already known (default: :func:`q_star`).

    Returns:
        :math:`\chi_1`, a float.

    References:
        Poole et al. 2016, eq. 7; Schoenholz et al. 2017, "Deep information propagation",
        eq. 5.

    Example:
        >>> import jax
        >>> round(chi1(3.0, 0.0, jax.nn.relu, degree=20), 5)   # sw2 / 2 for ReLU
        1.5
    """
    _check(sw2, sb2, activation)
    q = q_star(sw2, sb2, activation, degree) if q_star_value is None else q_star_value
    return float(sw2 * _moments(activation, _clip_q(q), degree)[1])


def c_star(sw2: float, sb2: float, activation: Callable, degree: int = DEFAULT_DEGREE,
           q_star_value: float | None = None) -> float:
    r"""Stable fixed point of the correlation map: 1 in the ordered phase (:math:`\chi_1\le 1`),
    otherwise the largest root of :math:`c = \mathcal{C}(c)` in :math:`[-1, 1)`.

    Args:
        sw2, sb2: the weight and bias variances.
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        degree: Gauss-Hermite nodes.
        q_star_value: :math:`q^*` if already known (default: :func:`q_star`).

    Returns:
        :math:`c^*`, a float.

    References:
        Poole et al. 2016, Fig. 2; Schoenholz et al. 2017, Sec. 3.

    Example:
        >>> import jax.numpy as jnp
        >>> c_star(1.0, 0.05, jnp.tanh, degree=20)   # ordered phase
        1.0
        >>> c_star(3.0, 0.05, jnp.tanh, degree=20) < 1  # chaotic phase
        True
    """
    q = q_star(sw2, sb2, activation, degree) if q_star_value is None else q_star_value
    if chi1(sw2, sb2, activation, degree, q) <= 1.0:
        return 1.0

    def h(c):
        return correlation_map(c, q, sw2, sb2, activation, degree) - c

    grid = np.linspace(-1.0, 1.0, 81)[:-1]
    vals = np.array([h(c) for c in grid])
    # h(1) = 0 with slope chi1 - 1 > 0, so h < 0 just below 1: find the last sign change.
    sign_change = np.nonzero((vals[:-1] > 0) & (vals[1:] <= 0))[0]
    if vals[-1] > 0 or len(sign_change) == 0:
        lo, hi = grid[-1], 1.0 - 1e-9
        if h(lo) <= 0 or h(hi) >= 0:
            raise InvalidArgumentError(
                f"no stable correlation fixed point below 1 found for sw2={sw2}, sb2={sb2}."
            )
    else:
        i = sign_change[-1]
        lo, hi = grid[i], grid[i + 1]
    return float(optimize.brentq(h, lo, hi, xtol=1e-13))


def depth_scales(sw2: float, sb2: float, activation: Callable,
                 degree: int = DEFAULT_DEGREE) -> DepthScales:
    r"""Depth scales of Schoenholz et al. (2017):

    .. math::
        \xi_q^{-1} = -\log\left[\chi_1 + \sigma_w^2 E\,\phi''(\sqrt{q^*}z)\phi(\sqrt{q^*}z)\right],
        \qquad \xi_c^{-1} = -\log\left[\sigma_w^2 E\,\phi'(u_1)\phi'(u_2)\big|_{c^*}\right].

    The bracket in :math:`\xi_q` is the slope of the length map at :math:`q^*`, the one in
    :math:`\xi_c` the slope of the correlation map at :math:`c^*` (equal to :math:`\chi_1` when
    :math:`c^*=1`), so :math:`\xi_c = -1/\log\chi_1` in the ordered phase.

    Args:
        sw2, sb2: the weight and bias variances.
        activation: the activation :math:`\phi`, a JAX function applied elementwise (twice
            differentiable almost everywhere).
        degree: Gauss-Hermite nodes.

    Returns:
        The :class:`DepthScales` of the point.

    References:
        Schoenholz et al. 2017, "Deep information propagation", eqs. 4-9.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> ds = depth_scales(3.0, 0.05, jnp.tanh, degree=20)
        >>> ds.chi1 > 1, 0 < ds.c_star < 1   # chaotic: decorrelating fixed point
        (True, True)
    """
    _check(sw2, sb2, activation)
    q = q_star(sw2, sb2, activation, degree)
    qe = _clip_q(q)
    x1 = chi1(sw2, sb2, activation, degree, q)
    chi_q = float(x1 + sw2 * _moments(activation, qe, degree)[2])
    cs = c_star(sw2, sb2, activation, degree, q)
    chi_c = x1 if cs >= 1.0 else float(sw2 * _pair(activation, qe, cs, degree)[1])
    return DepthScales(sw2=float(sw2), sb2=float(sb2), q_star=q, c_star=cs, chi1=x1,
                       chi_q=chi_q, chi_c=chi_c, xi_q=_xi(chi_q), xi_c=_xi(chi_c))


def depth_scales_table(activation: Callable, sw2_grid, sb2_grid,
                       degree: int = DEFAULT_DEGREE) -> pd.DataFrame:
    r""":func:`depth_scales` on the grid ``sw2_grid x sb2_grid`` as a tidy DataFrame, one row per
    point with the :class:`DepthScales` fields as columns.

    Args:
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        sw2_grid, sb2_grid: the weight and bias variances (scalars or 1-D).
        degree: Gauss-Hermite nodes.

    Returns:
        DataFrame, rows ordered by ``sb2`` then ``sw2``.

    References:
        Schoenholz et al. 2017, "Deep information propagation", Fig. 1.

    Example:
        >>> import jax
        >>> df = depth_scales_table(jax.nn.relu, [1.0, 1.5], [0.0], degree=20)
        >>> [round(v, 5) for v in df["chi1"]]
        [0.5, 0.75]
    """
    rows = [dataclasses.asdict(depth_scales(float(w), float(b), activation, degree))
            for b in np.atleast_1d(sb2_grid) for w in np.atleast_1d(sw2_grid)]
    return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(DepthScales)])


def _xi(chi):
    if chi <= 0.0:
        return 0.0
    return float("inf") if chi == 1.0 else float(-1.0 / np.log(chi))


def critical_line(activation: Callable, sb2_grid,
                  sw2_range: tuple[float, float] = (0.05, 20.0),
                  degree: int = DEFAULT_DEGREE) -> pd.DataFrame:
    r"""The order-to-chaos transition :math:`\chi_1(\sigma_w^2, \sigma_b^2) = 1`: for each
    :math:`\sigma_b^2` the :math:`\sigma_w^2` where :math:`\chi_1` crosses 1 (Poole et al. 2016,
    Fig. 2; Schoenholz et al. 2017, Fig. 1), located by a scan over ``sw2_range`` and Brent's
    method. Rows with no crossing in the range have ``sw2 = NaN``. For ReLU,
    :math:`\chi_1 = \sigma_w^2/2` for every :math:`\sigma_b^2`, so the line is
    :math:`\sigma_w^2 = 2`, but for :math:`\sigma_b^2 > 0` the length map has no finite fixed
    point there (``q_star`` is ``inf``): only :math:`(2, 0)` is a proper edge of chaos.

    Args:
        activation: the activation :math:`\phi`, a JAX function applied elementwise.
        sb2_grid: the bias variances (scalar or 1-D).
        sw2_range: the ``(low, high)`` interval of :math:`\sigma_w^2` scanned.
        degree: Gauss-Hermite nodes.

    Returns:
        DataFrame with one row per ``sb2``: ``sb2``, ``sw2``, ``q_star`` (at the critical point).

    References:
        Poole et al. 2016, Fig. 2; Schoenholz et al. 2017, "Deep information propagation",
        Fig. 1.

    Example:
        >>> import jax
        >>> round(float(critical_line(jax.nn.relu, [0.0], degree=20)["sw2"][0]), 5)
        2.0
    """
    _check_activation(activation)
    lo_w, hi_w = sw2_range
    if not 0 < lo_w < hi_w:
        raise InvalidArgumentError(f"sw2_range must satisfy 0 < low < high; got {sw2_range}.")
    scan = np.geomspace(lo_w, hi_w, 25)
    rows = []
    for sb2 in np.atleast_1d(np.asarray(sb2_grid, dtype=float)):

        def f(sw2, sb2=sb2):
            return chi1(sw2, sb2, activation, degree) - 1.0

        vals = np.array([f(s) for s in scan])
        idx = np.nonzero(np.sign(vals[:-1]) != np.sign(vals[1:]))[0]
        if len(idx) == 0:
            rows.append({"sb2": sb2, "sw2": np.nan, "q_star": np.nan})
            continue
        i = idx[0]
        w = float(optimize.brentq(f, scan[i], scan[i + 1], xtol=1e-12, rtol=1e-12))
        rows.append({"sb2": sb2, "sw2": w, "q_star": q_star(w, sb2, activation, degree)})
    return pd.DataFrame(rows, columns=["sb2", "sw2", "q_star"])
