"""Closed-form duals of exponential and polynomial activations.

Same contract as :mod:`dynkit.theory.dual_activations`: for ``(u, v) ~ N(0, [[q11, q12],
[q12, q22]])`` each function returns ``(nngp, dnngp) = (E[phi(u) phi(v)], E[phi'(u) phi'(v)])``
with ``dnngp = d nngp / d q12`` (Price's theorem). Covers neural-tangents' ``Exp``,
``Gaussian``, ``Rbf``, ``ExpNormalized``, ``Polynomial``/``Monomial``/``Hermite`` and
``RectifiedMonomial`` (Novak et al. 2020). The polynomial duals use the Hermite expansion
(Mehler's formula) and are polynomials in ``(q11, q12, q22)``: no division, finite at zero
variance. ``RectifiedMonomial`` uses Cho & Saul's arc-cosine kernels written as
``P_n(cos t) (pi - t) + Q_n(cos t) sin t``, finite on the diagonal ``t = 0`` where
neural-tangents 0.6.5 divides ``0 / 0``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from dynkit.theory.dual_activations import _norm_and_cos, arccos

__all__ = [
    "arccos_polynomials",
    "exp_dual",
    "exp_normalized_dual",
    "gaussian_dual",
    "hermite_coefficients",
    "polynomial_dual",
    "rbf_dual",
    "rectified_monomial_dual",
]


def exp_dual(q11, q12, q22, a=1.0, b=1.0):
    """Dual of ``phi(x) = a exp(b x)`` (the Gaussian moment generating function).

    ``nngp = a² exp(b² (q11 + q22) / 2 + b² q12)``, ``dnngp = b² nngp``.

    Args:
        q11, q22: variances of ``u``, ``v``; q12: their covariance (broadcast together).
        a, b: amplitude and rate.

    Returns:
        ``(nngp, dnngp)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.Exp``).

    Example:
        >>> nngp, dnngp = exp_dual(1.0, 0.0, 1.0)          # E e^u E e^v = e
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (2.718282, 2.718282)
    """
    nngp = a * a * jnp.exp(b * b * ((q11 + q22) / 2 + q12))
    return nngp, b * b * nngp


def gaussian_dual(q11, q12, q22, a=1.0, b=-1.0):
    """Dual of ``phi(x) = a exp(b x²)``.

    With ``D = (1 - 2 b q11)(1 - 2 b q22) - 4 b² q12²`` (``det(I - 2 b Σ)``, > 0 needed):
    ``nngp = a² / sqrt(D)``, ``dnngp = 4 a² b² q12 / D^(3/2)``.

    Args:
        q11, q22: variances; q12: covariance.
        a, b: amplitude and (usually negative) exponent scale.

    Returns:
        ``(nngp, dnngp)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.Gaussian``).

    Example:
        >>> nngp, dnngp = gaussian_dual(1.0, 0.0, 1.0)     # (E e^{-u²})² = 1/3
        >>> round(float(nngp), 6), float(dnngp)
        (0.333333, 0.0)
    """
    d = (1 - 2 * b * q11) * (1 - 2 * b * q22) - 4 * b * b * q12 * q12
    nngp = a * a / jnp.sqrt(d)
    return nngp, 4 * b * b * q12 * nngp / d


def rbf_dual(q11, q12, q22, gamma=1.0):
    """Dual of ``phi(x) = sqrt(2) sin(sqrt(2 gamma) x + pi/4)``: the RBF kernel of the inputs.

    ``nngp = exp(-gamma (q11 + q22 - 2 q12))``, ``dnngp = 2 gamma nngp``.

    Args:
        q11, q22: variances; q12: covariance.
        gamma: inverse squared length scale, ``1 / (2 l²)``.

    Returns:
        ``(nngp, dnngp)``.

    References:
        Rahimi & Recht 2007 (random Fourier features); Novak et al. 2020 (``stax.Rbf``).

    Example:
        >>> [round(float(v), 6) for v in rbf_dual(1.0, 1.0, 1.0, gamma=0.5)]   # u = v
        [1.0, 1.0]
    """
    nngp = jnp.exp(-gamma * (q11 + q22 - 2 * q12))
    return nngp, 2 * gamma * nngp


def exp_normalized_dual(q11, q12, q22, gamma=1.0, shift=-1.0, do_clip=False):
    """The "Gaussian normalized kernel" (no finite activation behind it).

    With ``n = sqrt(q11 q22)`` and ``rho = q12 / n`` (clipped to [-1, 1] when ``do_clip``):
    ``nngp = n exp(gamma (rho + shift))``, ``dnngp = gamma exp(gamma (rho + shift))``.

    Args:
        q11, q22: variances; q12: covariance.
        gamma: exponent scale; shift: added to ``rho``; do_clip: clip ``rho``.

    Returns:
        ``(nngp, dnngp)``.

    References:
        Shankar et al. 2020, "Neural kernels without tangents" (p. 6); Novak et al. 2020
        (``stax.ExpNormalized``).

    Example:
        >>> [round(float(v), 6) for v in exp_normalized_dual(2.0, 2.0, 2.0)]   # n e^0, e^0
        [2.0, 1.0]
    """
    norm = jnp.sqrt(q11 * q22)
    rho = q12 / jnp.where(norm > 0, norm, 1)
    if do_clip:
        rho = jnp.clip(rho, -1, 1)
    e = jnp.exp(gamma * (rho + shift))
    return norm * e, gamma * e


def hermite_coefficients(coef) -> np.ndarray:
    """``A[k, m] = c_{k+2m} (k+2m)! / (k! 2^m m!)``: the Hermite expansion of a polynomial.

    ``sum_i c_i (s x)^i = sum_k He_k(x) s^k sum_m A[k, m] s^{2m}`` for ``x ~ N(0, 1)``
    (``He_k`` the probabilists' Hermite polynomials), from ``x^i = sum_k i! / (k! 2^m m!)
    He_k(x)`` with ``i = k + 2m``.

    Args:
        coef: ``c_0, c_1, ...`` (numpy order: lowest degree first).

    Returns:
        ``A``, shape ``(n, n // 2 + 1)`` with ``n = len(coef)``.

    References:
        Abramowitz & Stegun 1964, 22.12 (Hermite expansion of powers).

    Example:
        >>> hermite_coefficients([0.0, 0.0, 1.0]).tolist()     # x² = He_2 + 1
        [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    """
    coef = np.asarray(coef, dtype=np.float64)
    n = len(coef)
    out = np.zeros((n, n // 2 + 1))
    for k in range(n):
        for m in range((n - 1 - k) // 2 + 1):
            i = k + 2 * m
            out[k, m] = coef[i] * math.factorial(i) / (math.factorial(k) * 2 ** m
                                                      * math.factorial(m))
    return out


def polynomial_dual(q11, q12, q22, coef):
    """Dual of ``phi(x) = sum_i coef[i] x^i`` (Hermite expansion, Mehler's formula).

    With ``beta_k(q) = sum_m A[k, m] q^m`` (:func:`hermite_coefficients`):
    ``nngp = sum_k k! q12^k beta_k(q11) beta_k(q22)`` and
    ``dnngp = sum_k k k! q12^(k-1) beta_k(q11) beta_k(q22)``; a polynomial in
    ``(q11, q12, q22)``, exact for every variance (including 0).

    Args:
        q11, q22: variances; q12: covariance.
        coef: the coefficients, lowest degree first (numpy's ``Polynomial`` order).

    Returns:
        ``(nngp, dnngp)``.

    References:
        Mehler 1866; O'Donnell 2014, "Analysis of Boolean functions", ch. 11 (Hermite
        expansion of Gaussian correlations); Novak et al. 2020 (``stax.Polynomial``).

    Example:
        >>> [float(v) for v in polynomial_dual(2.0, 1.0, 3.0, [0.0, 0.0, 1.0])]  # E u²v²
        [8.0, 4.0]
    """
    a = hermite_coefficients(coef)
    nngp = dnngp = 0.0
    for k in range(a.shape[0]):
        if not a[k].any():
            continue
        b1 = sum(float(c) * q11 ** m for m, c in enumerate(a[k]) if c)
        b2 = sum(float(c) * q22 ** m for m, c in enumerate(a[k]) if c)
        fk = float(math.factorial(k))
        nngp = nngp + fk * q12 ** k * b1 * b2
        if k:
            dnngp = dnngp + k * fk * q12 ** (k - 1) * b1 * b2
    zero = 0 * (q11 + q12 + q22)
    return nngp + zero, dnngp + zero


def arccos_polynomials(degree: int):
    """``(P_n, Q_n)`` with Cho & Saul's ``J_n(t) = P_n(cos t) (pi - t) + Q_n(cos t) sin t``.

    ``J_n = (-1)^n sin^(2n+1) t (1/sin t d/dt)^n ((pi - t)/sin t)``; differentiating in
    ``c = cos t`` gives ``P_0 = 1, Q_0 = 0``, ``P_{n+1} = (1 - c²) P_n' + (2n + 1) c P_n``,
    ``Q_{n+1} = P_n + (1 - c²) Q_n' + 2n c Q_n``.

    Args:
        degree: ``n >= 0``.

    Returns:
        Two :class:`numpy.polynomial.Polynomial` in ``c``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning" (eq. 4, the arc-cosine kernels).

    Example:
        >>> p, q = arccos_polynomials(2)                      # J_2 = (1 + 2c²)(π - t) + 3c s
        >>> p.coef.tolist(), q.coef.tolist()
        ([1.0, 0.0, 2.0], [0.0, 3.0])
    """
    poly = np.polynomial.Polynomial
    c, one_c2 = poly([0.0, 1.0]), poly([1.0, 0.0, -1.0])
    p, q = poly([1.0]), poly([0.0])
    for n in range(degree):
        p, q = (one_c2 * p.deriv() + (2 * n + 1) * c * p,
                p + one_c2 * q.deriv() + 2 * n * c * q)
    return p, q


def _arccos_kernel(q11, q12, q22, n):
    """``E[relu(u)^n relu(v)^n] = (q11 q22)^(n/2) J_n(t) / (2 pi)``."""
    norm, cos = _norm_and_cos(q11, q12, q22)
    theta = arccos(cos)
    sin = jnp.sqrt(jnp.maximum(1 - cos * cos, 0))
    p, q = arccos_polynomials(n)
    horner = lambda poly: sum(float(c) * cos ** i for i, c in enumerate(poly.coef))
    j = horner(p) * (np.pi - theta) + horner(q) * sin
    return norm ** n * j / (2 * np.pi)


def rectified_monomial_dual(q11, q12, q22, degree):
    """Dual of ``phi(x) = x^n`` for ``x >= 0``, 0 otherwise (arc-cosine kernel of order n).

    ``nngp = (q11 q22)^(n/2) J_n(t) / (2 pi)`` with ``cos t = q12 / sqrt(q11 q22)`` and
    ``J_n`` of :func:`arccos_polynomials`; ``dnngp = n² (q11 q22)^((n-1)/2) J_{n-1}(t) /
    (2 pi)`` (``phi' = n x^(n-1)``), 0 for ``n = 0``. Finite everywhere, including the
    diagonal ``t = 0`` where ``J_n(0) = pi (2n - 1)!!``.

    Args:
        q11, q22: variances; q12: covariance.
        degree: ``n >= 0``.

    Returns:
        ``(nngp, dnngp)``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Novak et al. 2020
        (``stax.RectifiedMonomial``, which returns NaN at ``t = 0``).

    Example:
        >>> [float(v) for v in rectified_monomial_dual(1.0, 1.0, 1.0, 2)]  # E relu(u)^4 = 3/2
        [1.5, 2.0]
    """
    nngp = _arccos_kernel(q11, q12, q22, degree)
    if degree == 0:
        return nngp, jnp.zeros_like(nngp)
    return nngp, degree * degree * _arccos_kernel(q11, q12, q22, degree - 1)
