"""google/svcca's PWCCA convention (``pwcca.compute_pwcca`` of github.com/google/svcca), offered
as ``pwcca(X, Y, convention="google")``.

Morcos et al. 2018 weight each canonical correlation by how much of the representation its
canonical variate accounts for (``similarity.pwcca``, the default). google/svcca's code, which
the paper's numbers come from, computes the weights differently:

1. covariances by ``np.cov`` (``N - 1``), each block scaled by the largest entry of its own
   covariance (``Σ_xx / max|Σ_xx|``, ``Σ_xy / sqrt(max|Σ_xx| max|Σ_yy|)``); neurons whose
   scaled variance is below ``epsilon`` are dropped, ``epsilon I`` is added;
2. ``u, ρ, vᵀ = svd(Σ_xx^{-1/2} Σ_xy Σ_yy^{-1/2})`` (pseudo-inverse square roots);
3. the "directions" are ``uᵀ(x - μ) + μ``: the *whitened-space* singular vectors applied to
   the raw neurons (no ``Σ_xx^{-1/2}``), with the neuron means added back;
4. ``P`` = Q of the QR decomposition of those directions (Gram–Schmidt in data space), and
   ``α_i = Σ_j |⟨P_i, x_j⟩|`` against the *uncentered* neurons ``x_j``;
5. ``PWCCA = Σ_i α_i ρ_i / Σ_i α_i``, on the side with fewer kept neurons (X on a tie).

Its branch for a Y side with fewer neurons indexes X's activations with Y's neuron mask (it
fails unless both sides have as many neurons); here that branch mirrors the X one.
"""

from __future__ import annotations

import numpy as np

from dynkit.errors import InvalidArgumentError

from .similarity import _centered, as_pair

__all__ = ["pwcca_google"]


def _inv_sqrt_pinv(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(np.linalg.pinv(S, hermitian=True))
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def pwcca_google(X, Y, epsilon: float = 0.0) -> float:
    """PWCCA as google/svcca's ``compute_pwcca(acts1.T, acts2.T, epsilon)`` computes it
    (module docstring).

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations.
        epsilon: google/svcca's cutoff and covariance regularizer (default 0, as there).

    Returns:
        The weighted mean canonical correlation.

    References:
        Morcos, Raghu & Bengio 2018 (NeurIPS); github.com/google/svcca ``pwcca.py``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(60, 4))
        >>> round(pwcca_google(X, X @ rng.normal(size=(4, 4))), 8)
        1.0
    """
    X, Y = as_pair(X, Y)
    _centered("X", X), _centered("Y", Y)
    epsilon = float(epsilon)
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise InvalidArgumentError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    C = np.cov(X.T, Y.T)
    d1 = X.shape[1]
    sxx, syy, sxy = C[:d1, :d1], C[d1:, d1:], C[:d1, d1:]
    mx, my = np.abs(sxx).max(), np.abs(syy).max()
    sxx, syy, sxy = sxx / mx, syy / my, sxy / np.sqrt(mx * my)
    kx, ky = np.abs(np.diag(sxx)) >= epsilon, np.abs(np.diag(syy)) >= epsilon
    if not kx.any() or not ky.any():
        raise InvalidArgumentError(f"pwcca (google): every neuron of X or Y has a scaled "
                                   f"variance below epsilon={epsilon}")
    sxx, syy, sxy = sxx[kx][:, kx], syy[ky][:, ky], sxy[kx][:, ky]
    sxx, syy = sxx + epsilon * np.eye(len(sxx)), syy + epsilon * np.eye(len(syy))
    u, rho, vt = np.linalg.svd(_inv_sqrt_pinv(sxx) @ sxy @ _inv_sqrt_pinv(syy))
    A, coef = (X[:, kx], u) if kx.sum() <= ky.sum() else (Y[:, ky], vt.T)
    mean = A.mean(0)
    P, _ = np.linalg.qr((A - mean) @ coef + mean)
    alpha = np.abs(P.T @ A).sum(1)
    alpha = alpha / alpha.sum()
    return float(np.sum(alpha * np.abs(rho)))
