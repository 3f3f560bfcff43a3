"""Elementwise nonlinearities of the ``stax`` vocabulary, re-exported by
:mod:`dynkit.theory.stax`.

Each constructor returns ``(init_fn, apply_fn, kernel_fn)``. With ``K, Θ`` the NNGP kernel
and NTK of the layer input and ``q11, q22`` the variances of x1 and x2, a nonlinearity ``φ``
maps ``K' = E[φ(u) φ(v)]`` and ``Θ' = Θ K̇'``, ``K̇' = E[φ'(u) φ'(v)]``, over
``(u, v) ~ N(0, [[q11, K], [K, q22]])`` (Neal 1996; Lee et al. 2018; Jacot et al. 2018). The
closed forms are in :mod:`dynkit.theory.dual_activations`; :func:`ElementwiseNumerical` takes
any ``φ`` by Gauss-Hermite quadrature. The examples use ``x = [[1, 1], [1, -1]]``: unit
variances, ``K = 0`` across.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import erf as _erf

from dynkit.errors import InvalidArgumentError
from dynkit.theory import dual_activations as duals
from dynkit.theory.stax_pointwise import Elementwise
from dynkit.theory.stax_triple import triple

__all__ = [
    "ABRelu",
    "Abs",
    "Cos",
    "ElementwiseNumerical",
    "Erf",
    "Gelu",
    "LeakyRelu",
    "Relu",
    "Sigmoid_like",
    "Sign",
    "Sin",
]


def _act(name, fn, dual):
    return triple(Elementwise(name, fn, dual))


def Relu():
    """``max(x, 0)``; arc-cosine kernel of order 1 (Cho & Saul 2009).

    Kernel: with ``cos t = K / sqrt(q11 q22)``,
    ``K' = sqrt(q11 q22) (sin t + (π - t) cos t) / (2π)`` and ``K̇' = (π - t) / (2π)``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning"; Lee et al. 2018; Jacot et al. 2018.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # q = 1, K = 0: [1/2, 1/(2π)]
        >>> [round(float(v), 6) for v in Relu()[2](x, None, "nngp")[0]]
        [0.5, 0.159155]
    """
    return _act("Relu", jax.nn.relu, duals.relu_dual)


def ABRelu(a, b):
    """``a x`` for ``x < 0``, ``b x`` for ``x >= 0``.

    Kernel: ``K' = a b K + (b - a)² k_relu``, ``K̇' = (a² + b²)(π - t) / (2π) + a b t / π``
    with ``k_relu`` and ``t`` as for :func:`Relu`.

    Args:
        a, b: the slopes for negative and non-negative inputs.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Cho & Saul 2009; Novak et al. 2020 (``stax.ABRelu``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [1/2 + 1/8, 1/(8π)]
        >>> [round(float(v), 6) for v in ABRelu(0.5, 1.0)[2](x, None, "nngp")[0]]
        [0.625, 0.039789]
    """
    return _act("ABRelu", lambda x: jnp.where(x < 0, a * x, b * x),
                lambda q11, q12, q22: duals.abrelu_dual(q11, q12, q22, a, b))


def LeakyRelu(alpha=0.01):
    """``max(x, alpha x)`` (= ``ABRelu(alpha, 1)``).

    Kernel: that of :func:`ABRelu` with ``a = alpha``, ``b = 1``.

    Args:
        alpha: the negative slope.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Maas et al. 2013 (leaky ReLU); Cho & Saul 2009.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> bool(jnp.allclose(LeakyRelu(0.1)[2](x, None, "nngp"), ABRelu(0.1, 1)[2](x, None, "nngp")))
        True
    """
    return _act("LeakyRelu", lambda x: jnp.where(x < 0, alpha * x, x),
                lambda q11, q12, q22: duals.leaky_relu_dual(q11, q12, q22, alpha))


def Abs():
    """``|x|`` (= ``ABRelu(-1, 1)``).

    Kernel: ``K' = -K + 4 k_relu``, ``K̇' = 1 - 2 t / π`` (:func:`ABRelu` with ``a = -1, b = 1``).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Cho & Saul 2009; Novak et al. 2020 (``stax.Abs``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [E u², 2/π]
        >>> [round(float(v), 6) for v in Abs()[2](x, None, "nngp")[0]]
        [1.0, 0.63662]
    """
    return _act("Abs", jnp.abs, duals.abs_dual)


def Erf(a=1.0, b=1.0, c=0.0):
    """``a erf(b x) + c`` (Williams 1997).

    Kernel: ``K' = a² (2/π) arcsin(2 b² K / sqrt((1 + 2 b² q11)(1 + 2 b² q22))) + c²``,
    ``K̇' = a² b² (4/π) / sqrt((1 + 2 b² q11)(1 + 2 b² q22) - 4 b⁴ K²)``.

    Args:
        a, b, c: amplitude, input scale and offset.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Williams 1997, "Computing with infinite networks"; Lee et al. 2018.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [(2/π) arcsin(2/3), 0]
        >>> [round(float(v), 6) for v in Erf()[2](x, None, "nngp")[0]]
        [0.464559, 0.0]
    """
    return _act("Erf", lambda x: a * _erf(b * x) + c,
                lambda q11, q12, q22: duals.erf_dual(q11, q12, q22, a, b, c))


def Sigmoid_like():
    """``0.5 erf(x / 2.4020563531719796) + 0.5``, an erf-based sigmoid with a closed form.

    Kernel: that of :func:`Erf` with ``a = 0.5, b = 1 / 2.4020563531719796, c = 0.5``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Williams 1997; Novak et al. 2020 (``stax.Sigmoid_like``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> erf = Erf(0.5, 1 / 2.4020563531719796, 0.5)
        >>> bool(jnp.allclose(Sigmoid_like()[2](x, None, "nngp"), erf[2](x, None, "nngp")))
        True
    """
    s = duals.SIGMOID_LIKE_SCALE
    return _act("Sigmoid_like", lambda x: 0.5 * _erf(x / s) + 0.5, duals.sigmoid_like_dual)


def Gelu(approximate=False):
    """Exact GELU ``x Phi(x)`` (closed form); ``approximate=True`` (tanh form) falls back to
    Gauss-Hermite quadrature.

    Kernel: the closed form of :func:`dynkit.theory.dual_activations.gelu_dual`
    (``K' = K/4 + [K arcsin(K / sqrt(P)) + (K² + q11 q22 D) / (P sqrt(D))] / (2π)`` with
    ``P = (1 + q11)(1 + q22)``, ``D = P - K²``), ``Θ' = Θ K̇'``.

    Args:
        approximate: use the tanh approximation of GELU (numerical kernel, 25 nodes).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Hendrycks & Gimpel 2016; Tsuchida et al. 2021 (the GELU kernel).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])
        >>> bool(jnp.allclose(Gelu()[2](x, None, "nngp"), Gelu(True)[2](x, None, "nngp"), atol=1e-3))
        True
    """
    if approximate:
        return ElementwiseNumerical(lambda x: jax.nn.gelu(x, approximate=True), degree=25)
    return _act("Gelu", lambda x: jax.nn.gelu(x, approximate=False), duals.gelu_dual)


def Sin(a=1.0, b=1.0, c=0.0):
    """``a sin(b x + c)``.

    Kernel (Gaussian characteristic function), with ``e± = exp(-b² (q11 + q22 ± 2 K) / 2)``:
    ``K' = a²/2 (e- - cos(2c) e+)``, ``K̇' = a² b²/2 (e- + cos(2c) e+)``.

    Args:
        a, b, c: amplitude, frequency and phase.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020 (``stax.Sin``); Pearce et al. 2020 (periodic activations).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [(1 - e⁻²)/2, 0]
        >>> [round(float(v), 6) for v in Sin()[2](x, None, "nngp")[0]]
        [0.432332, 0.0]
    """
    return _act("Sin", lambda x: a * jnp.sin(b * x + c),
                lambda q11, q12, q22: duals.sin_dual(q11, q12, q22, a, b, c))


def Cos(a=1.0, b=1.0, c=0.0):
    """``a cos(b x + c)``.

    Kernel: that of :func:`Sin` with phase ``c + π/2``.

    Args:
        a, b, c: amplitude, frequency and phase.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020 (``stax.Cos``).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, -1.0]])     # [(1 + e⁻²)/2, e⁻¹]
        >>> [round(float(v), 6) for v in Cos()[2](x, None, "nngp")[0]]
        [0.567668, 0.367879]
    """
    return _act("Cos", lambda x: a * jnp.cos(b * x + c),
                lambda q11, q12, q22: duals.cos_dual(q11, q12, q22, a, b, c))


def Sign():
    """``sign(x)``; arc-cosine kernel of order 0, zero derivative (NTK term vanishes).

    Kernel: ``K' = (2/π) arcsin(K / sqrt(q11 q22))``, ``K̇' = 0``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Cho & Saul 2009, "Kernel methods for deep learning".

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 1.0], [1.0, 0.0]])     # correlation 1/sqrt(2): (2/π)(π/4)
        >>> [round(float(v), 6) for v in Sign()[2](x, None, "nngp")[0]]
        [1.0, 0.5]
    """
    return _act("Sign", jnp.sign, duals.sign_dual)


def ElementwiseNumerical(fn, degree=None, df=None, *, deg=None):
    """Any elementwise ``fn`` (tanh, swish, ...): kernels by ``degree``-point 2-D Gauss-Hermite
    quadrature (:func:`dynkit.theory.dual_activations.gauss_hermite_dual`), the NTK factor from
    ``df`` (default ``jax.grad(fn)``).

    Args:
        fn: the activation, an elementwise JAX function (neural-tangents' name).
        degree: Hermite nodes per dimension, >= 2 (default 25; second positional argument,
            as neural-tangents' ``deg``).
        df: its derivative, elementwise (default: ``jax.grad`` of ``fn``).
        deg: neural-tangents' name of ``degree``, accepted as a keyword for drop-in use (and
            in :func:`dynkit.theory.stax.from_spec` specs); give one of the two.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Novak et al. 2020, "Neural Tangents: fast and easy infinite neural networks in
        Python" (``stax.ElementwiseNumerical``).

    Example:
        >>> import jax.numpy as jnp
        >>> _, _, kernel_fn = ElementwiseNumerical(jnp.sin, deg=30)
        >>> _, _, exact_fn = Sin()
        >>> x = jnp.array([[1.0, 0.5], [0.2, -1.0]])
        >>> bool(jnp.allclose(kernel_fn(x, None, "nngp"), exact_fn(x, None, "nngp"), atol=1e-6))
        True
    """
    if degree is not None and deg is not None and degree != deg:
        raise InvalidArgumentError(f"ElementwiseNumerical: degree and its alias deg disagree "
                                   f"(degree={degree}, deg={deg}); give one")
    degree = 25 if degree is None and deg is None else (deg if degree is None else degree)
    if int(degree) < 2:
        raise InvalidArgumentError(f"ElementwiseNumerical: degree must be >= 2, got {degree}")
    dual = functools.partial(_numerical_dual, fn, int(degree), df)
    return _act("ElementwiseNumerical", fn, dual)


def _numerical_dual(fn, degree, df, q11, q12, q22):
    return duals.gauss_hermite_dual(fn, q11, q12, q22, degree=degree, df=df)
