"""Representation similarity: CKA, SVCCA, PWCCA, orthogonal Procrustes and RSA.

Every measure is a pure function of two activation matrices ``X`` (``N x D₁``) and ``Y``
(``N x D₂``) whose rows are the same ``N`` inputs (trailing axes are flattened, so conv maps
``(N, H, W, C)`` are accepted). Inputs may be float32 or float64; arithmetic is float64 numpy.
Centering is over the ``N`` inputs (each feature minus its mean) unless a docstring says
otherwise. Bad input raises: different ``N`` (``ShapeMismatchError``), NaN/Inf, constant
activations (zero variance) and too few inputs (``InvalidArgumentError``).

References:
    Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of neural network representations
        revisited" (ICML).
    Song, Smola, Gretton, Bedo & Borgwardt 2012, "Feature selection via dependence
        maximization" (JMLR): the unbiased HSIC estimator.
    Nguyen, Raghu & Kornblith 2021, "Do wide and deep networks learn the same things?" (ICLR).
    Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, "SVCCA" (NeurIPS).
    Morcos, Raghu & Bengio 2018, "Insights on representational similarity in neural networks
        with canonical correlation" (NeurIPS).
    Ding, Denain & Steinhardt 2021, "Grounding representation similarity with statistical
        testing" (NeurIPS).
    Kriegeskorte, Mur & Bandettini 2008, "Representational similarity analysis" (Front. Syst.
        Neurosci.).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import rankdata

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.validation import check_finite, check_positive

__all__ = ["cca", "center_gram", "cka", "cka_gram", "gram_linear", "gram_rbf", "hsic",
           "procrustes", "pwcca", "rdm", "rsa", "svcca"]

KERNELS = ("linear", "rbf")


#: Matrices up to this many entries are decomposed on one BLAS thread: their LAPACK calls
#: gain nothing from threads, and on a busy machine OpenBLAS's thread synchronization made a
#: 359 x 64 SVD ~100x slower (measured: 190 ms vs 2 ms on 2 loaded cores).
SINGLE_THREAD_ENTRIES = 2**22


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def svd(a: np.ndarray, **kwargs):
    """``np.linalg.svd(a, full_matrices=False, **kwargs)``, on one BLAS thread for small
    ``a`` (``SINGLE_THREAD_ENTRIES``)."""
    if a.size > SINGLE_THREAD_ENTRIES:
        return np.linalg.svd(a, full_matrices=False, **kwargs)
    with _blas_controller().limit(limits=1, user_api="blas"):
        return np.linalg.svd(a, full_matrices=False, **kwargs)


# --------------------------------------------------------------------- input checks
def as_matrix(name: str, X, min_rows: int = 2) -> np.ndarray:
    """``X`` as a float64 ``(N, D)`` matrix (trailing axes flattened), checked finite."""
    a = np.asarray(X)
    if a.ndim < 2:
        raise ShapeMismatchError(f"{name} must be an (N, D) activation matrix (or (N, ...)), "
                                 f"got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InvalidArgumentError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.reshape(a.shape[0], -1).astype(np.float64, copy=False)
    if a.shape[0] < min_rows or a.shape[1] == 0:
        raise InvalidArgumentError(f"{name} needs at least {min_rows} inputs (rows) and one "
                                   f"feature, got shape {a.shape}")
    check_finite(name, a)
    return a


def as_pair(X, Y, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``X, Y`` as float64 matrices over the same ``N`` inputs (``as_matrix``)."""
    nx, ny = np.shape(X)[:1], np.shape(Y)[:1]
    if nx != ny:
        raise ShapeMismatchError(f"X and Y must hold the same inputs (rows): X has {nx} and Y "
                                 f"has {ny} rows")
    return as_matrix("X", X, min_rows), as_matrix("Y", Y, min_rows)


def _centered(name: str, a: np.ndarray) -> np.ndarray:
    c = a - a.mean(axis=0)
    if not np.any(np.abs(c) > 1e-12 * max(1.0, float(np.max(np.abs(a))))):
        raise InvalidArgumentError(f"{name} is constant over the inputs (zero variance): "
                                   "similarity is undefined")
    return c


# --------------------------------------------------------------------- kernels and HSIC
def gram_linear(X) -> np.ndarray:
    """Linear Gram matrix ``K = X Xᵀ`` (``N x N``).

    Example:
        >>> gram_linear(np.array([[1.0, 0.0], [1.0, 1.0]])).tolist()
        [[1.0, 1.0], [1.0, 2.0]]
    """
    X = as_matrix("X", X, 1)
    return X @ X.T


def gram_rbf(X, bandwidth: float = 1.0) -> np.ndarray:
    """RBF Gram matrix ``K_ij = exp(-‖x_i - x_j‖² / (2 σ²))`` with ``σ² = bandwidth² ·
    median_{i,j} ‖x_i - x_j‖²``.

    The median is over all ``N²`` pairs, the zero diagonal included: the convention of
    Kornblith et al. 2019's colab (``gram_rbf(x, threshold)``, ``threshold`` = ``bandwidth``).

    Example:
        >>> K = gram_rbf(np.array([[0.0], [1.0], [3.0]]))
        >>> np.allclose(np.diag(K), 1.0), bool(K[0, 1] > K[0, 2])
        (True, True)
    """
    X = as_matrix("X", X, 1)
    bandwidth = check_positive("bandwidth", bandwidth)
    sq = np.sum(X * X, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)
    med = float(np.median(d2))
    if med <= 0.0:
        raise InvalidArgumentError("gram_rbf: the median squared distance between inputs is 0 "
                                   "(constant or mostly duplicated activations)")
    return np.exp(-d2 / (2.0 * bandwidth**2 * med))


def center_gram(K) -> np.ndarray:
    """Doubly centered Gram matrix ``H K H`` with ``H = I - 11ᵀ/N``.

    Example:
        >>> Kc = center_gram(np.arange(9.0).reshape(3, 3))
        >>> bool(np.allclose(Kc.sum(0), 0) and np.allclose(Kc.sum(1), 0))
        True
    """
    K = np.asarray(K, dtype=np.float64)
    return K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()


def hsic(K, L, debiased: bool = False) -> float:
    """Hilbert-Schmidt independence criterion of two ``N x N`` Gram matrices.

    Biased (Gretton et al. 2005): ``HSIC_0 = tr(K H L H) / (N - 1)²``.
    Unbiased (Song et al. 2012, Eq. 5; used by Nguyen et al. 2021), with ``K̃, L̃`` the Gram
    matrices with zeroed diagonals:

    ``HSIC_1 = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((N-1)(N-2)) - 2/(N-2) · 1ᵀK̃L̃1] / (N (N-3))``

    Args:
        K, L: symmetric ``N x N`` Gram matrices.
        debiased: the unbiased estimator (needs ``N >= 4``).

    Returns:
        The HSIC estimate (float).

    Example:
        >>> K = gram_linear(np.arange(8.0).reshape(4, 2))
        >>> round(hsic(K, K), 6), round(hsic(K, K, debiased=True), 6)
        (177.777778, 138.666667)
    """
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    n = K.shape[0]
    if K.shape != (n, n) or L.shape != (n, n):
        raise ShapeMismatchError(f"hsic: K and L must be N x N of the same N, got {K.shape} "
                                 f"and {L.shape}")
    if not debiased:
        return float(np.sum(center_gram(K) * L) / (n - 1) ** 2)
    if n < 4:
        raise InvalidArgumentError(f"the debiased (unbiased HSIC) estimator needs N >= 4 "
                                   f"inputs, got N = {n}")
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    k1, l1 = Kt.sum(1), Lt.sum(1)
    val = (np.sum(Kt * Lt) + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
           - 2.0 / (n - 2) * float(k1 @ l1))
    return float(val / (n * (n - 3)))


def cka_gram(K, L, debiased: bool = False) -> float:
    """CKA of two Gram matrices: ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (``hsic``).

    Example:
        >>> X = np.random.default_rng(0).normal(size=(10, 3))
        >>> round(cka_gram(gram_linear(X), gram_linear(2 * X)), 12)
        1.0
    """
    kl, kk, ll = hsic(K, L, debiased), hsic(K, K, debiased), hsic(L, L, debiased)
    return _ratio(kl, kk, ll)


def _ratio(kl: float, kk: float, ll: float) -> float:
    for name, v in (("X", kk), ("Y", ll)):
        if not v > 0.0:
            raise InvalidArgumentError(
                f"HSIC({name}, {name}) = {v:.3g} <= 0: {name} is constant over the inputs "
                "(zero variance), or too few inputs for the debiased estimator; CKA is "
                "undefined")
    return float(kl / np.sqrt(kk * ll))


def _linear_hsic_terms(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    """HSIC of the linear kernels in feature space (no ``N x N`` matrix); ``X, Y`` centered."""
    n = X.shape[0]
    cross = float(np.sum((X.T @ Y) ** 2))
    if not debiased:
        return cross / (n - 1) ** 2
    a, b = np.sum(X * X, 1), np.sum(Y * Y, 1)
    sx, sy = X.sum(0), Y.sum(0)
    k1, l1 = X @ sx - a, Y @ sy - b
    tr = cross - float(a @ b)
    val = tr + (sx @ sx - a.sum()) * (sy @ sy - b.sum()) / ((n - 1) * (n - 2)) \
        - 2.0 / (n - 2) * float(k1 @ l1)
    return float(val / (n * (n - 3)))


def cka(X, Y, kernel: str = "linear", debiased: bool = False, bandwidth: float = 1.0) -> float:
    """Centered kernel alignment (Kornblith et al. 2019) of two representations.

    ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K, L`` the Gram matrices of
    ``X`` and ``Y`` (``hsic``: biased ``tr(KHLH)/(N-1)²`` by default, the unbiased estimator of
    Song et al. 2012 with ``debiased=True``, as in Nguyen et al. 2021). For the linear kernel
    this is computed in feature space, ``O(N D₁ D₂)`` with no ``N x N`` matrix: on centered
    data the biased form is ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)``, and the debiased one uses
    ``tr(K̃L̃) = ‖XᵀY‖²_F - Σ_i ‖x_i‖²‖y_i‖²``, ``K̃1 = X Xᵀ1 - (‖x_i‖²)_i``.

    Centering/normalization: features are centered over the inputs (the biased HSIC is
    centered by ``H``; the unbiased one is invariant to it); the ratio normalizes the scale.
    CKA is invariant to orthogonal maps and isotropic scaling of either argument, not to
    arbitrary invertible linear maps. Linear CKA equals the RV coefficient.

    Args:
        X: ``(N, D₁)`` activations.
        Y: ``(N, D₂)`` activations of the same inputs.
        kernel: ``"linear"`` (default) or ``"rbf"`` (``gram_rbf``).
        debiased: use the unbiased HSIC estimator (``N >= 4``).
        bandwidth: RBF bandwidth as a fraction of the median distance (``gram_rbf``).

    Returns:
        CKA in ``[0, 1]`` (the debiased estimate may fall slightly below 0).

    Raises:
        ShapeMismatchError: different numbers of inputs.
        InvalidArgumentError: NaN/Inf, constant activations, ``N < 4`` when debiased, unknown
            kernel.

    References:
        Kornblith et al. 2019 (ICML); Song et al. 2012 (JMLR); Nguyen et al. 2021 (ICLR).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(50, 8))
        >>> Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
        >>> round(cka(X, 3.0 * X @ Q), 10)
        1.0
        >>> bool(cka(X, rng.normal(size=(50, 8)), debiased=True) < 0.1)
        True
    """
    if kernel not in KERNELS:
        raise InvalidArgumentError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    X, Y = as_pair(X, Y, 4 if debiased else 2)
    X, Y = _centered("X", X), _centered("Y", Y)
    if kernel == "rbf":
        return cka_gram(gram_rbf(X, bandwidth), gram_rbf(Y, bandwidth), debiased)
    return _ratio(_linear_hsic_terms(X, Y, debiased), _linear_hsic_terms(X, X, debiased),
                  _linear_hsic_terms(Y, Y, debiased))


# --------------------------------------------------------------------- CCA family
def _basis(name: str, X: np.ndarray, keep) -> tuple[np.ndarray, np.ndarray]:
    """Centered ``X = U S Vᵀ`` truncated by ``keep``: ``(U_k, s_k)``."""
    U, s, _ = svd(_centered(name, X))
    rank = int(np.sum(s > s[0] * max(X.shape) * np.finfo(np.float64).eps))
    if keep is None:
        k = rank
    elif isinstance(keep, (int, np.integer)) and not isinstance(keep, bool):
        if keep < 1:
            raise InvalidArgumentError(f"keep must be >= 1 directions or a fraction in (0, 1], "
                                       f"got {keep!r}")
        k = min(int(keep), rank)
    elif isinstance(keep, float) and 0.0 < keep <= 1.0:
        frac = np.cumsum(s**2) / np.sum(s**2)
        k = min(int(np.searchsorted(frac, keep * (1 - 1e-12)) + 1), rank)
    else:
        raise InvalidArgumentError(f"keep must be an int >= 1 (directions), a float in (0, 1] "
                                   f"(fraction of variance) or None (all), got {keep!r}")
    return U[:, :k], s[:k]


def cca(X, Y, keep=None, epsilon: float = 0.0) -> np.ndarray:
    """Canonical correlations ``ρ_1 >= ρ_2 >= ...`` of ``X`` and ``Y`` (after an optional SVD
    reduction of each to its top directions).

    Each matrix is centered and reduced by SVD, ``X_c = U S Vᵀ``, keeping ``keep`` directions
    (``svcca``). The canonical correlations are the singular values of the whitened
    cross-covariance ``Σ_xx^{-1/2} Σ_xy Σ_yy^{-1/2}``; in the SVD bases this is ``D_x U_xᵀ U_y
    D_y`` with ``D = diag((s/s_1) / sqrt((s/s_1)² + ε))``: ``ε = 0`` gives ``U_xᵀU_y``; ``ε > 0``
    is google/svcca's ``epsilon`` (``cca_core.get_cca_similarity`` adds it to the covariances
    after scaling each by its largest entry), applied, as its SVCCA tutorial does, to the
    SVD-reduced activations, whose covariance is diagonal with largest entry ``s_1²/(N-1)``.

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations.
        keep: directions kept per side: ``None`` (all of nonzero variance), an ``int``, or a
            fraction of variance in ``(0, 1]``.
        epsilon: google/svcca's covariance regularizer (default 0).

    Returns:
        ``min(k_x, k_y)`` canonical correlations, in decreasing order.

    References:
        Hotelling 1936; Raghu et al. 2017 (NeurIPS).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> np.round(cca(X, X @ rng.normal(size=(3, 3))), 8).tolist()
        [1.0, 1.0, 1.0]
    """
    return _cca(X, Y, keep, epsilon)[0]


def _cca(X, Y, keep, epsilon):
    X, Y = as_pair(X, Y)
    epsilon = float(epsilon)
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise InvalidArgumentError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    Ux, sx = _basis("X", X, keep)
    Uy, sy = _basis("Y", Y, keep)
    T = Ux.T @ Uy
    if epsilon > 0:
        dx, dy = sx / sx[0], sy / sy[0]
        T = (dx / np.sqrt(dx**2 + epsilon))[:, None] * T * (dy / np.sqrt(dy**2 + epsilon))
    A, rho, Bt = svd(T)
    return np.clip(rho, 0.0, 1.0), Ux @ A, Uy @ Bt.T, sx.size, sy.size


def svcca(X, Y, keep=0.99, epsilon: float = 0.0, threshold: float | None = None) -> float:
    """SVCCA similarity (Raghu et al. 2017): the mean canonical correlation after reducing
    each representation to the SVD directions that explain ``keep`` of its variance.

    ``SVCCA = (1/k) Σ_{i<=k} ρ_i``, ``k = min(k_x, k_y)``, ``ρ`` from ``cca(X, Y, keep,
    epsilon)``. Centering: each feature over the inputs. Normalization: CCA whitens each side,
    so SVCCA is invariant to any invertible linear map of the kept subspace. With ``k`` close
    to ``N - 1`` (e.g. flattened conv maps, ``D >= N``) every canonical correlation is ~1 by
    construction: keep fewer directions or use more inputs than ``D``.

    google/svcca conventions, as named options: ``epsilon`` (its covariance regularizer;
    default 0 as in ``get_cca_similarity``); ``threshold`` (its ``get_cca_similarity`` summary
    ``"mean"`` averages only the first ``i`` coefficients, ``i`` the smallest with
    ``Σ_{j<i} ρ_j >= threshold · Σ ρ``; its default there is 0.98). The default here,
    ``threshold=None``, averages all ``k`` coefficients, as the paper and google/svcca's SVCCA
    tutorial (``np.mean(cca_coef1)``) do.

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations.
        keep: fraction of variance, a ``float`` in ``(0, 1]`` (default 0.99, the paper's),
            an ``int`` number of directions (``keep=1`` keeps one direction, ``keep=1.0`` all
            the variance), or ``None`` (all; plain mean CCA).
        epsilon: google/svcca's regularizer (``cca``).
        threshold: google/svcca's trailing-coefficient cut, or ``None``.

    Returns:
        SVCCA in ``[0, 1]``.

    References:
        Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, "SVCCA: Singular vector canonical
            correlation analysis for deep learning dynamics and interpretability" (NeurIPS).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 6))
        >>> round(svcca(X, X @ rng.normal(size=(6, 6)), keep=6), 8)
        1.0
    """
    rho = cca(X, Y, keep, epsilon)
    if threshold is None:
        return float(np.mean(rho))
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"threshold must be in [0, 1] or None, got {threshold!r}")
    frac = np.concatenate([[0.0], np.cumsum(rho)]) / np.sum(rho)
    i = int(np.argmax(frac >= threshold))
    return float(np.mean(rho[:i])) if i > 0 else float("nan")


def pwcca(X, Y, keep=None, epsilon: float = 0.0, weight_side: str = "smaller",
          convention: str = "morcos2018") -> float:
    """Projection-weighted CCA (Morcos et al. 2018): canonical correlations weighted by how
    much of the representation each canonical variate accounts for.

    With ``h_i`` the canonical variates of the weighted side (unit ``N``-vectors, centered)
    and ``z_j`` its centered neuron activation vectors: ``α_i = Σ_j |⟨h_i, z_j⟩|``,
    ``PWCCA = Σ_i α_i ρ_i / Σ_i α_i`` (the distance is ``1 - PWCCA``).

    ``weight_side``: ``"smaller"`` (default; the side with fewer kept directions, X on a tie,
    as google/svcca's ``compute_pwcca``), ``"x"`` or ``"y"``. ``convention="google"`` computes
    the weights as google/svcca's ``pwcca.py`` does instead (Gram–Schmidt of the whitened-space
    singular vectors applied to the raw neurons, projected on the uncentered activations;
    ``similarity_google.pwcca_google``; no ``keep``/``weight_side`` there). Default
    ``"morcos2018"``, the paper's definition above.

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations.
        keep: SVD reduction before CCA (``cca``; default ``None``: none).
        epsilon: google/svcca's regularizer (``cca``).
        weight_side: which representation's neurons give the weights.
        convention: ``"morcos2018"`` (default) or ``"google"``.

    Returns:
        PWCCA in ``[0, 1]``.

    References:
        Morcos, Raghu & Bengio 2018 (NeurIPS), Eq. (2)-(3).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(60, 4))
        >>> round(pwcca(X, X @ rng.normal(size=(4, 4))), 8)
        1.0
    """
    if convention == "google":
        from .similarity_google import pwcca_google

        if keep is not None or weight_side != "smaller":
            raise InvalidArgumentError("pwcca(convention='google') takes no keep or weight_side "
                                       "(google/svcca's compute_pwcca has neither)")
        return pwcca_google(X, Y, epsilon)
    if convention != "morcos2018":
        raise InvalidArgumentError(f"convention must be 'morcos2018' or 'google', got "
                                   f"{convention!r}")
    sides = ("smaller", "x", "y")
    if weight_side not in sides:
        raise InvalidArgumentError(f"weight_side must be one of {sides}, got {weight_side!r}")
    rho, Hx, Hy, kx, ky = _cca(X, Y, keep, epsilon)
    use_x = weight_side == "x" or (weight_side == "smaller" and kx <= ky)
    Z, H = (as_matrix("X", X), Hx) if use_x else (as_matrix("Y", Y), Hy)
    alpha = np.abs(H.T @ (Z - Z.mean(0))).sum(1)
    return float(alpha @ rho / alpha.sum())


# --------------------------------------------------------------------- Procrustes, RSA
def procrustes(X, Y) -> float:
    """Orthogonal Procrustes distance (Ding et al. 2021), squared form.

    With ``X, Y`` centered and scaled to unit Frobenius norm,
    ``d²(X, Y) = min_Q ‖X - Y Q‖²_F = 2 - 2 ‖XᵀY‖_*`` (``‖·‖_*`` the nuclear norm; ``Q`` with
    orthonormal columns, zero-padding the narrower side). Invariant to orthogonal maps and
    isotropic scaling; ``0`` iff ``Y = c X Q``; at most 2.

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations.

    Returns:
        The distance in ``[0, 2]`` (0 for identical representations up to rotation/scale).

    References:
        Ding, Denain & Steinhardt 2021, "Grounding representation similarity with statistical
            testing" (NeurIPS); Schönemann 1966.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(30, 5))
        >>> Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        >>> abs(round(procrustes(X, X @ Q), 10))
        0.0
    """
    X, Y = as_pair(X, Y)
    X, Y = _centered("X", X), _centered("Y", Y)
    X, Y = X / np.linalg.norm(X), Y / np.linalg.norm(Y)
    nuc = svd(X.T @ Y, compute_uv=False).sum()
    return float(max(2.0 - 2.0 * nuc, 0.0))


def rdm(X) -> np.ndarray:
    """Representational dissimilarity matrix with the correlation distance,
    ``RDM_ij = 1 - corr(x_i, x_j)`` (rows centered and normalized across features)."""
    X = as_matrix("X", X)
    if X.shape[1] < 2:
        raise InvalidArgumentError("rsa: the correlation distance needs at least 2 features")
    Z = X - X.mean(1, keepdims=True)
    norms = np.linalg.norm(Z, axis=1)
    if np.any(norms <= 1e-12 * max(1.0, float(np.max(np.abs(X))))):
        raise InvalidArgumentError("rsa: some input's activation pattern is constant across "
                                   "features; its correlation distance is undefined")
    Z /= norms[:, None]
    return 1.0 - Z @ Z.T


def rsa(X, Y, compare: str = "spearman") -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008).

    ``RSA = corr(upper(RDM_X), upper(RDM_Y))`` over the ``N(N-1)/2`` input pairs, with
    ``RDM_ij = 1 - pearson(x_i, x_j)`` (the correlation distance: each input's activation
    pattern centered and normalized across features) and ``corr`` Spearman's rank correlation
    (default, as Kriegeskorte et al. recommend) or Pearson's (``compare="pearson"``).

    Args:
        X, Y: ``(N, D₁)``, ``(N, D₂)`` activations, ``N >= 3``, ``D >= 2``.
        compare: ``"spearman"`` or ``"pearson"``.

    Returns:
        RSA in ``[-1, 1]``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(12, 5))
        >>> round(rsa(X, 2.0 * X + 1.0), 10)
        1.0
    """
    if compare not in ("spearman", "pearson"):
        raise InvalidArgumentError(f"compare must be 'spearman' or 'pearson', got {compare!r}")
    X, Y = as_pair(X, Y, 3)
    iu = np.triu_indices(X.shape[0], 1)
    a, b = rdm(X)[iu], rdm(Y)[iu]
    if compare == "spearman":
        a, b = rankdata(a), rankdata(b)
    a, b = a - a.mean(), b - b.mean()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    if den == 0:
        raise InvalidArgumentError("rsa: an RDM is constant over input pairs; correlation "
                                   "undefined")
    return float(a @ b / den)
