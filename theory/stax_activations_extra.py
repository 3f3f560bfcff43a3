"""Exponential and polynomial nonlinearities of the ``stax`` vocabulary (neural-tangents'
``Exp``, ``Gaussian``, ``Rbf``, ``ExpNormalized``, ``Hermite``, ``Monomial``,
``RectifiedMonomial``, ``Polynomial``), re-exported by :mod:`dynkit.theory.stax`.

Each is an :class:`~dynkit.theory.stax_pointwise.Elementwise` layer with a closed-form dual
from :mod:`dynkit.theory.dual_exp_poly`: ``K' = E[φ(u) φ(v)]``, ``Θ' = Θ E[φ'(u) φ'(v)]`` over
``(u, v) ~ N(0, [[q11, K], [K, q22]])`` (Lee et al. 2018; Jacot et al. 2018). The examples use
``x = [[1, 1], [1, -1]]``: unit variances, ``K = 0`` across.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.theory import dual_exp_poly as duals
from dynkit.theory.stax_activations import _act

__all__ = [
    "Exp",
    "ExpNormalized",
    "Gaussian",
    "Hermite",
    "Monomial",
    "Polynomial",
    "Rbf",
    "RectifiedMonomial",
]


def _degree(name, degree):
    if isinstance(degree, bool) or int(degree) != degree or degree < 0:
        raise InvalidArgumentError(f"{name}: degree must be a non-negative integer, got "
                                   f"{degree!r}")
    return int(degree)


def Exp(a=1.0, b=1.0):
    """``a exp(b x)``.

    Kernel: ``K' = a² exp(b² ((q11 + q22)/2 + K))``, ``K̇' = b² K'``.

    Args:
        a, b: amplitude and rate.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.Exp``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [e², e]
        >>> [round(float(v), 6) for v in Exp()[2](x, None, "nngp")[0]]
        [7.389056, 2.718282]
    """
    return _act("Exp", lambda x: a * jnp.exp(b * x), functools.partial(duals.exp_dual, a=a, b=b))


def Gaussian(a=1.0, b=-1.0):
    """``a exp(b x²)``.

    Kernel: ``K' = a² / sqrt(D)``, ``K̇' = 4 a² b² K / D^(3/2)`` with
    ``D = (1 - 2 b q11)(1 - 2 b q22) - 4 b² K²``.

    Args:
        a, b: amplitude and exponent scale.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.Gaussian``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [1/sqrt(5), 1/3]
        >>> [round(float(v), 6) for v in Gaussian()[2](x, None, "nngp")[0]]
        [0.447214, 0.333333]
    """
    return _act("Gaussian", lambda x: a * jnp.exp(b * x * x),
                functools.partial(duals.gaussian_dual, a=a, b=b))


def Rbf(gamma=1.0):
    """``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``, whose kernel is the RBF kernel.

    Kernel: ``K' = exp(-gamma (q11 + q22 - 2 K))``, ``K̇' = 2 gamma K'``.

    Args:
        gamma: inverse squared length scale ``1 / (2 l²)``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Rahimi & Recht 2007; Novak et al. 2020 (``stax.Rbf``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [1, e^-1]
        >>> [round(float(v), 6) for v in Rbf(0.5)[2](x, None, "nngp")[0]]
        [1.0, 0.367879]
    """
    return _act("Rbf", lambda x: math.sqrt(2) * jnp.sin(math.sqrt(2 * gamma) * x + math.pi / 4),
                functools.partial(duals.rbf_dual, gamma=gamma))


def _no_finite_network(x):
    raise UnsupportedLayerError("ExpNormalized: defines a kernel only; it has no finite-width "
                                "activation (apply_fn)")


def ExpNormalized(gamma=1.0, shift=-1.0, do_clip=False):
    """The "Gaussian normalized kernel" (kernel only: ``apply_fn`` raises).

    Kernel: ``K' = sqrt(q11 q22) exp(gamma (rho + shift))``, ``Θ' = gamma exp(gamma (rho +
    shift)) Θ`` with ``rho = K / sqrt(q11 q22)`` (clipped to [-1, 1] with ``do_clip``).

    Args:
        gamma: exponent scale; shift: added to the correlation; do_clip: clip it.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Shankar et al. 2020, "Neural kernels without tangents"; Novak et al. 2020
        (``stax.ExpNormalized``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [1, e^-1]
        >>> [round(float(v), 6) for v in ExpNormalized()[2](x, None, "nngp")[0]]
        [1.0, 0.367879]
    """
    return _act("ExpNormalized", _no_finite_network,
                functools.partial(duals.exp_normalized_dual, gamma=gamma, shift=shift,
                                  do_clip=bool(do_clip)))


def Polynomial(coef):
    """``coef[0] + coef[1] x + ... + coef[n] x^n`` (numpy's ``Polynomial`` order).

    Kernel (Hermite expansion): ``K' = sum_k k! K^k beta_k(q11) beta_k(q22)``,
    ``K̇' = sum_k k k! K^(k-1) beta_k(q11) beta_k(q22)`` with ``beta_k`` of
    :func:`dynkit.theory.dual_exp_poly.polynomial_dual`; exact for any variances.

    Args:
        coef: the coefficients, lowest degree first.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Mehler 1866; Novak et al. 2020 (``stax.Polynomial``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # 1 + x: [1 + 1, 1 + 0]
        >>> Polynomial([1.0, 1.0])[2](x, None, "nngp")[0].tolist()
        [2.0, 1.0]
    """
    coef = [float(c) for c in np.atleast_1d(np.asarray(coef, dtype=np.float64))]
    return _poly("Polynomial", coef)


def _poly(name, coef):
    def fn(x):
        return sum(c * x ** i for i, c in enumerate(coef) if c) + 0 * x

    return _act(name, fn, functools.partial(duals.polynomial_dual, coef=coef))


def Monomial(degree):
    """``x^degree`` (any non-negative integer degree; neural-tangents allows 0-5).

    Kernel: that of :func:`Polynomial`; e.g. degree 2: ``K' = q11 q22 + 2 K²``, ``K̇' = 4 K``.

    Args:
        degree: a non-negative integer.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020 (``stax.Monomial``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [3, 1]
        >>> Monomial(2)[2](x, None, "nngp")[0].tolist()
        [3.0, 1.0]
    """
    n = _degree("Monomial", degree)
    return _poly("Monomial", [0.0] * n + [1.0])


def Hermite(degree, unit_norm=False):
    """Normalized probabilists' Hermite polynomial ``He_n(x) / sqrt(n!)``.

    Kernel: exact (:func:`Polynomial` of its coefficients) by default; on unit-variance
    inputs (e.g. after ``LayerNorm``) it is ``K' = K^n``, ``Θ' = n K^(n-1) Θ``.
    ``unit_norm=True`` is neural-tangents' definition: those formulas for any input (it
    assumes unit variance); the two agree when ``q11 = q22 = 1``.

    Args:
        degree: ``n``, a non-negative integer.
        unit_norm: use neural-tangents' ``K^n`` shortcut instead of the exact kernel.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        O'Donnell 2014, ch. 11; Novak et al. 2020 (``stax.Hermite``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])     # unit variances, K = 0.6
        >>> [round(float(v), 6) for v in Hermite(3)[2](x * 2 ** 0.5, None, "nngp")[0]]
        [1.0, 0.216]
    """
    n = _degree("Hermite", degree)
    coef = [float(c) for c in np.polynomial.hermite_e.herme2poly([0.0] * n + [1.0])]
    coef = [c / math.sqrt(math.factorial(n)) for c in coef]
    if not unit_norm:
        return _poly("Hermite", coef)

    def dual(q11, q12, q22):
        d = n * q12 ** (n - 1) if n else jnp.zeros_like(q12)
        return q12 ** n + 0 * (q11 + q22), d + 0 * (q11 + q22)

    fn = _poly("Hermite", coef)[1].layer.fn
    return _act("Hermite", fn, dual)


def RectifiedMonomial(degree):
    """``x^degree`` for ``x >= 0``, 0 otherwise (degree 1: ReLU; 0: the step function).

    Kernel: the arc-cosine kernel of order ``n`` (Cho & Saul 2009),
    ``K' = (q11 q22)^(n/2) J_n(t) / (2 pi)``, ``K̇' = n² (q11 q22)^((n-1)/2) J_{n-1}(t) /
    (2 pi)`` with ``cos t = K / sqrt(q11 q22)``, written without ``1/sin t`` so it is finite
    on the diagonal (neural-tangents 0.6.5 returns NaN there).

    Args:
        degree: ``n``, a non-negative integer.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Novak et al. 2020
        (``stax.RectifiedMonomial``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # E relu(u)^4 = 3/2; (E relu(u)²)² = 1/4
        >>> [round(float(v), 6) for v in RectifiedMonomial(2)[2](x, None, "nngp")[0]]
        [1.5, 0.25]
    """
    n = _degree("RectifiedMonomial", degree)
    return _act("RectifiedMonomial", lambda x: jnp.where(x >= 0, x ** n, 0.0),
                functools.partial(duals.rectified_monomial_dual, degree=n))
