"""Orthant probabilities and truncated moments of a centered Gaussian in up to four dimensions.

For ``Y ~ N(0, C)`` in ``n <= 4`` dimensions this module evaluates, deterministically and to
~1e-12 for well-conditioned ``C``,

    P(Y > 0),    E[Y_l 1{Y > 0}],    E[Y_k Y_l 1{Y > 0}].

* Orthant probabilities: ``1/2^n`` for ``n <= 1``; Sheppard's ``1/4 + asin(r_01) / 2pi`` for
  ``n = 2`` and ``1/8 + sum_{i<j} asin(r_ij) / 4pi`` for ``n = 3`` (``r`` the correlations);
  for ``n = 4`` a one-dimensional Gauss-Legendre integral of Plackett's (1954) identity
  ``dP/dr_ij = phi2(0, 0; r_ij) P(Y_k > 0, Y_l > 0 | Y_i = Y_j = 0)`` (R. L. Plackett, "A
  reduction formula for normal multivariate integrals", Biometrika 41, 1954).
* Truncated moments: Stein's lemma ``E[Y_k h(Y)] = sum_j C_kj E[d_j h(Y)]`` with
  ``h = 1{Y > 0}`` turns each moment into conditional orthant probabilities of one dimension less
  (G. M. Tallis, "The moment generating function of the truncated multi-normal distribution",
  JRSS B 23, 1961), so all of them reduce to orthant probabilities of dimension <= 4.

All functions are pure ``jax.numpy`` (they can be ``jit``-ted and differentiated), batched over
the leading axes of ``cov`` (shape ``(..., n, n)``), and take the moment indices as Python ints.
Accuracy degrades as ``C`` becomes singular (two perfectly correlated coordinates); NaN entries
propagate to NaN results, as in ``jax.numpy``.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError

__all__ = ["orthant_moment1", "orthant_moment2", "orthant_probability"]

_MAX_DIM = 4
_GL_NODES = 64


def _check(cov, *indices):
    cov = jnp.asarray(cov)
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2] or cov.shape[-1] > _MAX_DIM:
        raise ShapeMismatchError(f"cov must have shape (..., n, n) with n <= {_MAX_DIM}, got "
                                 f"{cov.shape}")
    n = cov.shape[-1]
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n:
            raise InvalidArgumentError(f"moment index must be an int in [0, {n}) for a {n}-dim "
                                       f"covariance, got {i!r}")
    return cov


@functools.cache
def _plackett_nodes(n: int = _GL_NODES):
    """Gauss-Legendre nodes and weights for ``int_0^1 ds`` after ``s = 1 - (1 - tau)^2``, which
    clusters nodes at ``s = 1`` and removes the square-root endpoint behavior of the Plackett
    integrand when the covariance is close to singular."""
    x, w = np.polynomial.legendre.leggauss(n)
    tau = (x + 1) / 2
    return tau * (2 - tau), w * (1 - tau)


def _corr(cov, i, j):
    r = cov[..., i, j] / jnp.sqrt(cov[..., i, i] * cov[..., j, j])
    return jnp.clip(r, -1.0, 1.0)


def _orthant4(cov):
    """Four-dimensional ``P(Y > 0)`` by Plackett's identity along ``R(s) = I + s (R - I)``:
    ``P = 1/16 + int_0^1 sum_{i<j} R_ij phi2(0, 0; s R_ij) P2(rho_kl|ij(s)) ds`` (``{k, l}`` the
    other two coordinates, ``P2`` the 2D orthant of their law given ``Y_i = Y_j = 0``)."""
    s, w = (jnp.asarray(a) for a in _plackett_nodes())
    total = jnp.full(cov.shape[:-2], 1 / 16)
    for (i, j), (k, l) in (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)),
                           ((1, 2), (0, 3)), ((1, 3), (0, 2)), ((2, 3), (0, 1))):
        r = {pair: _corr(cov, *pair)[..., None] for pair in ((i, j), (k, l), (k, i), (k, j),
                                                               (l, i), (l, j))}
        rij = s * r[i, j]
        det = 1 - rij ** 2
        ak, bk, al, bl = s * r[k, i], s * r[k, j], s * r[l, i], s * r[l, j]
        var_k = 1 - (ak ** 2 - 2 * rij * ak * bk + bk ** 2) / det
        var_l = 1 - (al ** 2 - 2 * rij * al * bl + bl ** 2) / det
        cov_kl = s * r[k, l] - (ak * al - rij * (ak * bl + bk * al) + bk * bl) / det
        rho = jnp.clip(cov_kl / jnp.sqrt(jnp.maximum(var_k * var_l, 1e-300)), -1.0, 1.0)
        integrand = r[i, j] * (0.25 + jnp.arcsin(rho) / (2 * jnp.pi)) / (2 * jnp.pi * jnp.sqrt(det))
        total = total + integrand @ w
    return total


def _condition(cov, j):
    """Covariance of the other coordinates given ``Y_j = 0``, and the density of ``Y_j`` at 0."""
    keep = [i for i in range(cov.shape[-1]) if i != j]
    col = cov[..., keep, j]
    sub = cov[..., keep, :][..., keep] - col[..., :, None] * col[..., None, :] / \
        cov[..., j, j][..., None, None]
    return sub, 1 / jnp.sqrt(2 * jnp.pi * cov[..., j, j])


def orthant_probability(cov):
    """``P(Y > 0)`` for ``Y ~ N(0, cov)``, ``cov`` of shape ``(..., n, n)`` with ``n <= 4``.

    ``1/2^n`` for ``n <= 1``; ``1/4 + asin(r_01) / 2pi`` for ``n = 2`` and
    ``1/8 + sum_{i<j} asin(r_ij) / 4pi`` for ``n = 3`` (Sheppard 1899; Plackett 1954); for
    ``n = 4``, Plackett's (1954) reduction along ``R(s) = I + s (R - I)``,

        P = 1/16 + int_0^1 sum_{i<j} R_ij phi2(0, 0; s R_ij) P2(rho_kl|ij(s)) ds,

    with ``{k, l}`` the other two coordinates and ``P2`` the 2D orthant probability of their law
    conditioned on ``Y_i = Y_j = 0``, by 64-node Gauss-Legendre quadrature in
    ``s = 1 - (1 - tau)^2`` (accurate to ~1e-12 unless ``cov`` is nearly singular).

    Args:
        cov: covariance matrices, shape ``(..., n, n)`` with ``n <= 4``.

    Returns:
        The probabilities, shape ``cov.shape[:-2]``.

    References:
        Sheppard 1899, "On the application of the theory of error to cases of normal
        distribution and normal correlation"; Plackett 1954, "A reduction formula for normal
        multivariate integrals".

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(orthant_probability(jnp.eye(3))), 6)   # independent: 1/8
        0.125
        >>> round(float(orthant_probability(jnp.array([[1.0, 0.5], [0.5, 1.0]]))), 6)  # 1/3
        0.333333
    """
    cov = _check(cov)
    n = cov.shape[-1]
    if n <= 1:
        return jnp.full(cov.shape[:-2], 0.5 ** n)
    if n == 2:
        return 0.25 + jnp.arcsin(_corr(cov, 0, 1)) / (2 * jnp.pi)
    if n == 3:
        asin = sum(jnp.arcsin(_corr(cov, i, j)) for i, j in ((0, 1), (0, 2), (1, 2)))
        return 0.125 + asin / (4 * jnp.pi)
    return _orthant4(cov)


def orthant_moment1(cov, l: int):
    """``E[Y_l 1{Y > 0}]`` for ``Y ~ N(0, cov)``, ``n <= 4``, by Stein's lemma (Tallis 1961):

        E[Y_l 1{Y > 0}] = sum_j cov_lj phi(0; cov_jj) P(Y_{-j} > 0 | Y_j = 0),

    ``phi(0; s) = 1 / sqrt(2 pi s)`` and ``Y_{-j} | Y_j = 0`` Gaussian with the Schur complement
    covariance (:func:`orthant_probability`, dimension ``n - 1``).

    Args:
        cov: covariance matrices, shape ``(..., n, n)`` with ``n <= 4``.
        l: the coordinate, an int in ``[0, n)``.

    Returns:
        The moments, shape ``cov.shape[:-2]``.

    References:
        Tallis 1961, "The moment generating function of the truncated multi-normal
        distribution".

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(orthant_moment1(jnp.eye(1), 0)), 6)   # E relu(Y) = 1 / sqrt(2 pi)
        0.398942
    """
    cov = _check(cov, l)
    total = 0.0
    for j in range(cov.shape[-1]):
        sub, dens = _condition(cov, j)
        total = total + cov[..., l, j] * dens * orthant_probability(sub)
    return total


def orthant_moment2(cov, k: int, l: int):
    """``E[Y_k Y_l 1{Y > 0}]`` for ``Y ~ N(0, cov)``, ``n <= 4``, by Stein's lemma on ``Y_k``
    (Tallis 1961):

        E[Y_k Y_l 1{Y > 0}] = cov_kl P(Y > 0)
                              + sum_{j != l} cov_kj phi(0; cov_jj) E[Y_l 1{Y_{-j} > 0} | Y_j = 0]

    (the conditional moment by :func:`orthant_moment1`), so only orthant probabilities of
    dimension <= 4 remain.

    Args:
        cov: covariance matrices, shape ``(..., n, n)`` with ``n <= 4``.
        k, l: the coordinates, ints in ``[0, n)``.

    Returns:
        The moments, shape ``cov.shape[:-2]``.

    References:
        Tallis 1961, "The moment generating function of the truncated multi-normal
        distribution".

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(orthant_moment2(jnp.eye(2), 0, 0)), 6)   # E[Y_0^2; Y > 0] = 1/4
        0.25
    """
    cov = _check(cov, k, l)
    total = cov[..., k, l] * orthant_probability(cov)
    for j in range(cov.shape[-1]):
        if j != l:
            sub, dens = _condition(cov, j)
            total = total + cov[..., k, j] * dens * orthant_moment1(sub, l - (l > j))
    return total
