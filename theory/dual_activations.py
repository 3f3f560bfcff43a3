"""Dual activations: closed-form Gaussian expectations behind infinite-width kernels.

For a pre-activation pair ``(u, v) ~ N(0, [[q11, q12], [q12, q22]])`` and an activation
``phi`` (argument ``activation`` where it is a function) every function here returns ``(nngp, dnngp)`` with

    nngp  = E[phi(u) phi(v)]          (the NNGP map, Neal 1996; Lee et al. 2018)
    dnngp = E[phi'(u) phi'(v)]        (the derivative map that multiplies the NTK,
                                       Jacot et al. 2018; Arora et al. 2019)

By Price's theorem ``dnngp = d nngp / d q12`` at fixed ``q11, q22``; the closed forms below
are written out explicitly (autodiff through ``arccos`` is singular at ``q12**2 = q11*q22``).
All arguments broadcast against each other; they are plain ``jax.numpy`` functions, so the
symbolic module can evaluate them on numbers and compare with its own sympy derivations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "SIGMOID_LIKE_SCALE",
    "abrelu_dual",
    "abs_dual",
    "arccos",
    "cos_dual",
    "erf_dual",
    "gauss_hermite_dual",
    "gelu_dual",
    "leaky_relu_dual",
    "relu_dual",
    "sigmoid_like_dual",
    "sign_dual",
    "sin_dual",
]

#: ``Sigmoid_like(x) = 0.5 * erf(x / SIGMOID_LIKE_SCALE) + 0.5`` (neural-tangents' constant).
SIGMOID_LIKE_SCALE = 2.4020563531719796


def _asin_series_coefficients(degree: int = 12) -> np.ndarray:
    """Chebyshev coefficients of ``g(z) = asin(sqrt z)/sqrt z − 1`` on ``z ∈ [0, 1/4]`` (variable
    ``t = 8z − 1``), fitted in float64; max error 3e-16 (g is analytic within |z| < 1)."""
    z = np.linspace(0.0, 0.25, 8001)[1:]
    g = np.arcsin(np.sqrt(z)) / np.sqrt(z) - 1
    return np.polynomial.chebyshev.chebfit(np.concatenate([[-1.0], 8 * z - 1]),
                                           np.concatenate([[0.0], g]), degree)


_ASIN_CHEB = tuple(float(c) for c in _asin_series_coefficients())  # python floats: keep dtype


def arccos(x):
    """``arccos`` on [-1, 1] by ``asin s = s + s g(s²)`` for ``s ≤ 1/2`` (``g`` a degree-12
    Chebyshev series, evaluated by Clenshaw's recurrence) and the half-angle identity
    ``asin|x| = π/2 − 2 asin(sqrt((1 − |x|)/2))`` above; ``arccos x = π/2 − asin x``.
    Accurate to 1e-15 in float64 and to rounding in float32, and 4–5× faster than XLA's CPU
    ``acos``, which dominates the cost of ReLU-family kernels.

    Args:
        x: an array with entries in [-1, 1].

    Returns:
        ``arccos(x)``, same shape and dtype.

    References:
        Abramowitz & Stegun 1964, 4.4.32 (half-angle identity); Clenshaw 1955, "A note on the
        summation of Chebyshev series".

    Example:
        >>> import jax.numpy as jnp
        >>> bool(jnp.allclose(arccos(jnp.array([-1.0, 0.3, 0.9])),
        ...                   jnp.arccos(jnp.array([-1.0, 0.3, 0.9])), atol=1e-6))
        True
    """
    a = jnp.abs(x)
    big = a > 0.5
    z = jnp.where(big, 0.5 * (1 - a), a * a)
    s = jnp.where(big, jnp.sqrt(z), a)
    t = 8 * z - 1
    b1, b2 = jnp.zeros_like(t), jnp.zeros_like(t)
    for c in _ASIN_CHEB[:0:-1]:
        b1, b2 = 2 * t * b1 - b2 + c, b1
    asin_small = s + s * (t * b1 - b2 + _ASIN_CHEB[0])
    asin_abs = jnp.where(big, np.pi / 2 - 2 * asin_small, asin_small)
    return np.pi / 2 - jnp.sign(x) * asin_abs


def _norm_and_cos(q11, q12, q22):
    """``sqrt(q11 q22)`` and the correlation ``q12 / sqrt(q11 q22)`` clipped to [-1, 1]."""
    norm = jnp.sqrt(q11 * q22)
    safe = jnp.where(norm > 0, norm, 1)
    cos = jnp.clip(q12 / safe, -1, 1)
    return norm, cos


def abrelu_dual(q11, q12, q22, a=0.0, b=1.0):
    """Dual of ``phi(x) = a x (x < 0), b x (x >= 0)`` (arc-cosine kernel of order 1).

    With ``cos(theta) = q12 / sqrt(q11 q22)`` and the ReLU arc-cosine kernel
    (Cho & Saul 2009, "Kernel methods for deep learning")

        k_relu = sqrt(q11 q22) / (2 pi) * (sin(theta) + (pi - theta) cos(theta)),

    writing ``phi(x) = a x + (b - a) relu(x)`` and using ``E[u relu(v)] = q12 / 2``:

        nngp  = a b q12 + (b - a)^2 k_relu
        dnngp = (a^2 + b^2) (pi - theta) / (2 pi) + a b theta / pi.

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.
        a, b: the slopes for ``x < 0`` and ``x >= 0``.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Novak et al. 2020,
        "Neural Tangents" (``ABRelu``).

    Example:
        >>> nngp, dnngp = abrelu_dual(1.0, 0.5, 1.0, a=1.0, b=1.0)   # identity: E[uv], 1
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.5, 1.0)
    """
    norm, cos = _norm_and_cos(q11, q12, q22)
    theta = arccos(cos)
    sin = jnp.sqrt(jnp.maximum(1 - cos * cos, 0))
    k_relu = norm * (sin + (np.pi - theta) * cos) / (2 * np.pi)
    nngp = a * b * q12 + (b - a) ** 2 * k_relu
    dnngp = (a * a + b * b) * (np.pi - theta) / (2 * np.pi) + a * b * theta / np.pi
    return nngp, dnngp


def relu_dual(q11, q12, q22):
    """ReLU dual (Cho & Saul 2009): ``abrelu_dual`` with ``a = 0, b = 1``;
    ``nngp = sqrt(q11 q22)(sin t + (pi - t) cos t) / (2 pi)``, ``dnngp = (pi - t) / (2 pi)``,
    ``cos t = q12 / sqrt(q11 q22)``.

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning".

    Example:
        >>> nngp, dnngp = relu_dual(1.0, 1.0, 1.0)   # u = v: E relu(u)^2 = 1/2, P(u > 0) = 1/2
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.5, 0.5)
    """
    return abrelu_dual(q11, q12, q22, 0.0, 1.0)


def leaky_relu_dual(q11, q12, q22, alpha=0.01):
    """LeakyReLU ``max(x, alpha x)`` dual: :func:`abrelu_dual` with ``a = alpha, b = 1``.

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.
        alpha: the negative slope.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Maas, Hannun & Ng 2013, "Rectifier nonlinearities improve neural network acoustic
        models"; Cho & Saul 2009.

    Example:
        >>> nngp, dnngp = leaky_relu_dual(1.0, 1.0, 1.0, alpha=1.0)   # identity
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (1.0, 1.0)
    """
    return abrelu_dual(q11, q12, q22, alpha, 1.0)


def abs_dual(q11, q12, q22):
    """``|x|`` dual: :func:`abrelu_dual` with ``a = -1, b = 1`` (``dnngp = 1 - 2 theta / pi``).

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Cho & Saul 2009; Novak et al. 2020, "Neural Tangents" (``Abs``).

    Example:
        >>> nngp, dnngp = abs_dual(1.0, 0.0, 1.0)   # independent: (E|u|)^2 = 2/pi, E sign = 0
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.63662, 0.0)
    """
    return abrelu_dual(q11, q12, q22, -1.0, 1.0)


def erf_dual(q11, q12, q22, a=1.0, b=1.0, c=0.0):
    """Dual of ``phi(x) = a erf(b x) + c`` (Williams 1997, "Computing with infinite networks").

        nngp  = a^2 (2/pi) arcsin(2 b^2 q12 / sqrt((1 + 2 b^2 q11)(1 + 2 b^2 q22))) + c^2
        dnngp = a^2 b^2 (4/pi) / sqrt((1 + 2 b^2 q11)(1 + 2 b^2 q22) - 4 b^4 q12^2).

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.
        a, b, c: the output scale, input scale and offset.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Williams 1997, "Computing with infinite networks".

    Example:
        >>> nngp, dnngp = erf_dual(1.0, 0.0, 1.0)   # independent: E erf = 0; dnngp = 4/(3 pi)
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.0, 0.424413)
    """
    b2 = b * b
    prod = (1 + 2 * b2 * q11) * (1 + 2 * b2 * q22)
    nngp = a * a * (2 / np.pi) * jnp.arcsin(jnp.clip(2 * b2 * q12 / jnp.sqrt(prod), -1, 1))
    nngp = nngp + c * c
    dnngp = a * a * b2 * (4 / np.pi) / jnp.sqrt(prod - 4 * b2 * b2 * q12 * q12)
    return nngp, dnngp


def sigmoid_like_dual(q11, q12, q22):
    """Dual of ``0.5 erf(x / 2.4020563531719796) + 0.5`` (neural-tangents' ``Sigmoid_like``),
    i.e. :func:`erf_dual` with ``a = 0.5, b = 1 / 2.4020563531719796, c = 0.5``.

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Williams 1997; Novak et al. 2020, "Neural Tangents" (``Sigmoid_like``).

    Example:
        >>> nngp, _ = sigmoid_like_dual(1.0, 0.0, 1.0)   # independent: (E sigmoid)^2 = 1/4
        >>> round(float(nngp), 6)
        0.25
    """
    return erf_dual(q11, q12, q22, 0.5, 1 / SIGMOID_LIKE_SCALE, 0.5)


def gelu_dual(q11, q12, q22):
    """Dual of the exact GELU ``phi(x) = x Phi(x)`` (Hendrycks & Gimpel 2016; kernel as in
    Tsuchida, Pearce, van der Heide, Roosta & Gallagher 2021).

    With ``P = (1 + q11)(1 + q22)`` and ``D = P - q12^2``:

        nngp  = q12 / 4 + [q12 arcsin(q12 / sqrt(P)) + (q12^2 + q11 q22 D) / (P sqrt(D))] / (2 pi)
        dnngp = 1/4 + [arcsin(q12 / sqrt(P))
                       + q12 / sqrt(D) (1 + (2 + q12^2 / D - q11 q22) / P)] / (2 pi)

    (``dnngp`` is ``d nngp / d q12``, Price's theorem).

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Hendrycks & Gimpel 2016, "Gaussian error linear units"; Tsuchida et al. 2021,
        "Avoiding kernel fixed points: computing with ELU and GELU infinite networks".

    Example:
        >>> nngp, dnngp = gelu_dual(1.0, 0.0, 1.0)   # independent: (E u Phi(u))^2 = 1 / (4 pi)
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.079577, 0.25)
    """
    p = (1 + q11) * (1 + q22)
    d = p - q12 * q12
    sqrt_d = jnp.sqrt(d)
    asin = jnp.arcsin(jnp.clip(q12 / jnp.sqrt(p), -1, 1))
    nngp = q12 / 4 + (q12 * asin + (q12 * q12 + q11 * q22 * d) / (p * sqrt_d)) / (2 * np.pi)
    dnngp = 0.25 + (asin + q12 / sqrt_d * (1 + (2 + q12 * q12 / d - q11 * q22) / p)) / (2 * np.pi)
    return nngp, dnngp


def sin_dual(q11, q12, q22, a=1.0, b=1.0, c=0.0):
    """Dual of ``phi(x) = a sin(b x + c)`` (Gaussian characteristic function):

        nngp  = a^2/2 [exp(-b^2 (q11 + q22 - 2 q12)/2) - cos(2c) exp(-b^2 (q11 + q22 + 2 q12)/2)]
        dnngp = a^2 b^2/2 [exp(-b^2 (q11 + q22 - 2 q12)/2)
                           + cos(2c) exp(-b^2 (q11 + q22 + 2 q12)/2)].

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.
        a, b, c: the amplitude, frequency and phase.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Rahimi & Recht 2007, "Random features for large-scale kernel machines"; Novak et al.
        2020, "Neural Tangents" (``Sin``).

    Example:
        >>> nngp, dnngp = sin_dual(1.0, 1.0, 1.0)   # u = v: E sin(u)^2 = (1 - e^-2) / 2
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.432332, 0.567668)
    """
    b2 = b * b
    e_minus = jnp.exp(-b2 * (q11 + q22 - 2 * q12) / 2)
    e_plus = jnp.exp(-b2 * (q11 + q22 + 2 * q12) / 2)
    cos2c = float(np.cos(2 * c))
    nngp = a * a / 2 * (e_minus - cos2c * e_plus)
    dnngp = a * a * b2 / 2 * (e_minus + cos2c * e_plus)
    return nngp, dnngp


def cos_dual(q11, q12, q22, a=1.0, b=1.0, c=0.0):
    """Dual of ``a cos(b x + c) = a sin(b x + c + pi/2)``: :func:`sin_dual` with ``c + pi/2``.

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.
        a, b, c: the amplitude, frequency and phase.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Rahimi & Recht 2007; Novak et al. 2020, "Neural Tangents" (``Cos``).

    Example:
        >>> nngp, dnngp = cos_dual(1.0, 1.0, 1.0)   # u = v: E cos(u)^2 = (1 + e^-2) / 2
        >>> round(float(nngp), 6), round(float(dnngp), 6)
        (0.567668, 0.432332)
    """
    return sin_dual(q11, q12, q22, a, b, c + np.pi / 2)


def sign_dual(q11, q12, q22):
    """Dual of ``sign(x)``: ``nngp = (2/pi) arcsin(q12 / sqrt(q11 q22)) = 1 - 2 theta / pi``
    (arc-cosine kernel of order 0, Cho & Saul 2009). ``sign`` has zero derivative almost
    everywhere, so ``dnngp = 0`` (the NTK through ``Sign`` only keeps later layers' terms).

    Args:
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning" (order 0).

    Example:
        >>> nngp, dnngp = sign_dual(1.0, 0.5, 1.0)   # 1 - 2 (pi/3) / pi = 1/3
        >>> round(float(nngp), 6), float(dnngp)
        (0.333333, 0.0)
    """
    _, cos = _norm_and_cos(q11, q12, q22)
    nngp = (2 / np.pi) * jnp.arcsin(cos)
    return nngp, jnp.zeros_like(nngp)


def gauss_hermite_dual(activation, q11, q12, q22, degree=25, df=None):
    """Dual of any elementwise ``activation`` by 2-D Gauss-Hermite quadrature of order
    ``degree``.

    With Hermite nodes/weights ``(x_i, w_i)`` (``int exp(-x^2) g(x) dx ~ sum_i w_i g(x_i)``),
    ``rho = q12 / sqrt(q11 q22)``, ``u_i = sqrt(2 q11) x_i`` and
    ``v_ij = sqrt(2 q22) (rho x_i + sqrt(1 - rho^2) x_j)``:

        nngp  ~ (1/pi) sum_ij w_i w_j phi(u_i) phi(v_ij)
        dnngp ~ (1/pi) sum_ij w_i w_j phi'(u_i) phi'(v_ij)

    Exact for polynomials of degree < 2 degree; accurate for smooth activations (tanh,
    swish, ...). The outer sum runs as a ``lax.scan`` so memory is ``degree`` times the
    output, not ``degree^2``.

    Args:
        activation: ``phi``, an elementwise JAX function.
        q11, q22: the variances of ``u`` and ``v`` (arrays, broadcast together, > 0).
        q12: their covariance, ``|q12| <= sqrt(q11 q22)``.
        degree: the number of Hermite nodes per dimension.
        df: ``phi'``, elementwise (default: ``jax.grad`` of ``activation``).

    Returns:
        ``(nngp, dnngp)``, arrays of the broadcast shape.

    References:
        Golub & Welsch 1969, "Calculation of Gauss quadrature rules"; Novak et al. 2020,
        "Neural Tangents" (``ElementwiseNumerical``).

    Example:
        >>> import jax.numpy as jnp
        >>> quad = gauss_hermite_dual(jnp.sin, 1.0, 0.3, 1.0, degree=30)
        >>> bool(jnp.allclose(jnp.stack(quad), jnp.stack(sin_dual(1.0, 0.3, 1.0)), atol=1e-6))
        True
    """
    if df is None:
        df = jax.grad(lambda x: jnp.sum(activation(x)))
    q11, q12, q22 = jnp.broadcast_arrays(q11, q12, q22)
    _, rho = _norm_and_cos(q11, q12, q22)
    nodes, weights = np.polynomial.hermite.hermgauss(degree)
    nodes = jnp.asarray(nodes, q12.dtype)
    weights = jnp.asarray(weights, q12.dtype)
    s1 = jnp.sqrt(2 * q11)[..., None]
    s2 = jnp.sqrt(2 * q22)[..., None]
    rho_e = rho[..., None]
    rc = jnp.sqrt(jnp.maximum(1 - rho * rho, 0))[..., None]

    def step(acc, node_weight):
        x_i, w_i = node_weight
        u = s1[..., 0] * x_i
        v = s2 * (rho_e * x_i + rc * nodes)
        inner = jnp.sum(weights * activation(v), axis=-1)
        dinner = jnp.sum(weights * df(v), axis=-1)
        return (acc[0] + w_i * activation(u) * inner, acc[1] + w_i * df(u) * dinner), None

    zero = jnp.zeros_like(q12)
    (nngp, dnngp), _ = lax.scan(step, (zero, zero), (nodes, weights))
    return nngp / np.pi, dnngp / np.pi
