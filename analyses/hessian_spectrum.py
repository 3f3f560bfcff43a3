"""Spectral quantities of a model's loss Hessian from Hessian-vector products only.

* ``lanczos``: the Lanczos tridiagonalization with full reorthogonalization, on any
  symmetric ``matvec`` (the engine of the rest);
* ``top_eigenvalues``: the ``k`` largest eigenpairs (sharpness ``λ_max`` for ``k = 1``),
  eigenvectors as parameter pytrees, with a convergence report;
* ``trace``: Hutchinson's estimator with Rademacher probes and its standard error, stopped at
  a requested relative error;
* ``density``: the spectral density by stochastic Lanczos quadrature (SLQ), with the
  outliers detected and returned separately (``outlier_ritz``);
* ``gradient_overlap``: the fraction of the gradient in the top-``k`` eigenspace (Gur-Ari,
  Roberts & Dyer 2018);
* ``layer_spectra``: per-layer (diagonal-block) traces and top eigenvalues, as a tidy table.

Every function takes ``(model, params, x, y, **options)`` with the options of
``dynkit.analyses.hessian.hessian_operator`` (``loss``, ``layers``, ``ggn``, ``batch_size``,
``dtype``), or a ``HessianOperator`` in place of ``model`` (then ``params, x, y`` are omitted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from dynkit.analyses.hessian_ops import HessianOperator, hessian_operator, select_layers
from dynkit.errors import InvalidArgumentError
from dynkit.validation import check_integer, check_positive

__all__ = ["OUTLIER_GAP", "Density", "Eigen", "Overlap", "TraceEstimate", "density",
           "gradient_overlap", "lanczos", "layer_spectra", "outlier_ritz", "top_eigenvalues",
           "trace"]


def _operator(model, params, x, y, options) -> HessianOperator:
    if isinstance(model, HessianOperator):
        if options or params is not None or x is not None or y is not None:
            raise InvalidArgumentError("pass either a HessianOperator alone or model, params, "
                                       "x, y and operator options, not both")
        return model
    if params is None or x is None or y is None:
        raise InvalidArgumentError("model, params, x and y are all needed")
    return hessian_operator(model, params, x, y, **options)


# ================================================================================= Lanczos
def lanczos(matvec, v0, num_iter: int, stop=None):
    """Lanczos tridiagonalization of a symmetric operator, with full reorthogonalization.

        A Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ,   T_m = tridiag(β, α, β),

    each new vector orthogonalized against all previous ones twice (classical Gram–Schmidt,
    "twice is enough"; Parlett 1998), so no ghost eigenvalues appear. The iteration stops
    early on an invariant subspace (``β_j ≈ 0``) or when ``stop(alphas, betas)`` is true.

    Args:
        matvec: ``v -> A v`` on 1-D arrays.
        v0: the nonzero starting vector (normalized here).
        num_iter: the most steps ``m``.
        stop: optional ``stop(alphas, betas) -> bool`` called after each step (``betas`` holds
            ``β_1 .. β_j``, the last the residual norm).

    Returns:
        ``(alphas, betas, Q)``: ``(m,)``, ``(m,)`` (``betas[-1]`` the residual coupling) and
        the ``(m, n)`` orthonormal Lanczos vectors.

    References:
        Lanczos 1950; Parlett 1998, "The symmetric eigenvalue problem" (SIAM), ch. 13.

    Example:
        >>> A = np.diag([3.0, 1.0, 2.0])
        >>> a, b, Q = lanczos(lambda v: A @ v, np.ones(3), 3)
        >>> np.round(np.linalg.eigvalsh(_tridiagonal(a, b)), 10)
        array([1., 2., 3.])
    """
    v0 = np.asarray(v0)
    dtype = v0.dtype if np.issubdtype(v0.dtype, np.floating) else np.float64
    n = v0.shape[0]
    num_iter = min(int(num_iter), n)
    Q = np.zeros((num_iter, n), dtype)
    norm = np.linalg.norm(v0)
    if norm == 0 or not np.isfinite(norm):
        raise InvalidArgumentError("the Lanczos starting vector must be nonzero and finite")
    Q[0] = v0 / norm
    alphas, betas = [], []
    for j in range(num_iter):
        w = np.asarray(matvec(Q[j]), dtype)
        if not np.all(np.isfinite(w)):
            raise InvalidArgumentError("the Hessian-vector product is not finite (NaN/Inf); "
                                       "check the parameters, data and loss")
        alphas.append(float(Q[j] @ w))
        basis = Q[:j + 1]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        beta = float(np.linalg.norm(w))
        betas.append(beta)
        scale = max(abs(a) for a in alphas) + max(betas)
        if beta <= 1e-12 * scale or j + 1 == num_iter or (stop is not None
                                                           and stop(alphas, betas)):
            break
        Q[j + 1] = w / beta
    m = len(alphas)
    return np.array(alphas), np.array(betas), Q[:m]


def _tridiagonal(alphas, betas) -> np.ndarray:
    return np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)


def _ritz(alphas, betas):
    """Ritz values (descending), their eigenvectors in the Krylov basis and residual norms
    ``|β_m s_{m,i}| = ‖A y_i − θ_i y_i‖``."""
    theta, S = np.linalg.eigh(_tridiagonal(alphas, betas))
    order = np.argsort(theta)[::-1]
    theta, S = theta[order], S[:, order]
    return theta, S, np.abs(betas[-1] * S[-1])


def _start(dim: int, seed: int, dtype) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(dtype)


# ======================================================================= top eigenvalues
@dataclass(frozen=True)
class Eigen:
    """Top eigenpairs of a Hessian.

    Attributes:
        eigenvalues: ``(k,)``, descending.
        eigenvectors: ``k`` unit eigenvectors, each a parameter pytree ``{node: {key: array}}``.
        vectors: the same as flat ``(k, P)`` rows (``HessianOperator.to_pytree`` order).
        residuals: ``‖H v_i − λ_i v_i‖`` (from the Lanczos recurrence; exact arithmetic).
        converged: whether every residual is at most ``tol · |λ_i|``.
        num_iter: Lanczos steps taken (= Hessian-vector products).
    """

    eigenvalues: np.ndarray
    eigenvectors: list
    vectors: np.ndarray
    residuals: np.ndarray
    converged: bool
    num_iter: int

    def head(self, n: int) -> Eigen:
        """The first ``n`` eigenpairs."""
        return replace(self, eigenvalues=self.eigenvalues[:n], eigenvectors=self.eigenvectors[:n],
                       vectors=self.vectors[:n], residuals=self.residuals[:n])


def top_eigenvalues(model, params=None, x=None, y=None, *, k: int = 1, tol: float = 1e-6,
                    max_iter: int | None = None, seed: int = 0, **options) -> Eigen:
    """The ``k`` largest (algebraic) eigenvalues of the loss Hessian and their eigenvectors.

    Lanczos with full reorthogonalization (``lanczos``) from a Gaussian start, stopped when
    the ``k`` top Ritz pairs have residuals ``‖H y − θ y‖ ≤ tol · |θ|``; the eigenvalue error
    is then at most ``residual² / gap`` (Parlett 1998, Thm 11.7.1). ``λ_1`` is the sharpness
    of Cohen et al. (2021). PyHessian finds the largest *magnitude* eigenvalues by power
    iteration with deflation; for a Hessian with ``λ_max > |λ_min|`` (trained networks) they
    coincide.

    Args:
        model, params, x, y: as in ``hessian_operator`` (or a ``HessianOperator`` alone).
        k: number of eigenpairs, ``1 <= k <= P``.
        tol: relative residual for convergence.
        max_iter: most Lanczos steps (default ``min(P, max(4k + 20, 60))``).
        seed: seed of the starting vector.
        **options: ``loss``, ``layers``, ``ggn``, ``batch_size``, ``dtype`` of
            ``hessian_operator``.

    Returns:
        An ``Eigen`` (``eigenvalues``, ``eigenvectors`` as pytrees, ``residuals``,
        ``converged``, ``num_iter``).

    Raises:
        InvalidArgumentError: ``k`` outside ``[1, P]`` and the errors of ``hessian_operator``.

    References:
        Cohen, Kaur, Li, Kolter & Talwalkar 2021, "Gradient descent on neural networks
        typically occurs at the edge of stability" (ICLR); Yao, Gholami, Keutzer & Mahoney
        2020, "PyHessian: neural networks through the lens of the Hessian".

    Example:
        >>> import jax.numpy as jnp, dynkit as dk
        >>> model = dk.models.mlp(2, [], 1, bias=False)
        >>> params = {"head": {"w": jnp.zeros((2, 1))}}
        >>> x = jnp.array([[2.0, 0.0], [0.0, 1.0]]); y = jnp.zeros((2, 1))
        >>> eig = top_eigenvalues(model, params, x, y, k=2, loss="mse")   # XᵀX/N = diag(2, .5)
        >>> eig.eigenvalues.round(6).tolist(), eig.converged
        ([2.0, 0.5], True)
    """
    op = _operator(model, params, x, y, options)
    k = check_integer("k", k)
    if k > op.dim:
        raise InvalidArgumentError(f"k={k} exceeds the number of parameters P={op.dim} of the "
                                   f"block {list(op.layers)}")
    tol = check_positive("tol", tol)
    m = check_integer("max_iter", max_iter) if max_iter is not None else max(4 * k + 20, 60)
    m = min(m, op.dim)

    def stop(alphas, betas):
        if len(alphas) < k:
            return False
        theta, _, res = _ritz(np.array(alphas), np.array(betas))
        return bool(np.all(res[:k] <= tol * np.maximum(np.abs(theta[:k]), 1e-30)))

    alphas, betas, Q = lanczos(op.matvec, _start(op.dim, seed, op.dtype), m, stop)
    theta, S, res = _ritz(alphas, betas)
    if len(theta) < k:  # an invariant subspace smaller than k: restart is not implemented
        raise InvalidArgumentError(f"the Krylov space of the start vector has dimension "
                                   f"{len(theta)} < k={k}; try another seed")
    vectors = (S[:, :k].T @ Q).astype(op.dtype)
    converged = bool(np.all(res[:k] <= tol * np.maximum(np.abs(theta[:k]), 1e-30)))
    return Eigen(theta[:k], [op.to_pytree(v) for v in vectors], vectors, res[:k], converged,
                 len(alphas))


# ================================================================================== trace
@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of ``tr H``.

    Attributes:
        value: the estimate, ``deflated`` plus the mean of the probe values.
        std_error: its standard error ``s / √n`` (0 for exact basis probes).
        num_probes: probes used.
        samples: the probe values ``zᵀ H z`` (``zᵀ P H P z`` when deflated).
        converged: whether ``std_error <= rtol · |value|`` was reached.
        deflated: the exact part ``tr(Qᵀ H Q)`` of a deflated estimate (0 otherwise).
    """

    value: float
    std_error: float
    num_probes: int
    samples: np.ndarray
    converged: bool
    deflated: float = 0.0


def trace(model, params=None, x=None, y=None, *, rtol: float = 0.01, max_probes: int = 1000,
          min_probes: int = 10, block: int = 10, probes: str = "rademacher",
          method: str = "hvp", deflate=None, seed: int = 0, **options) -> TraceEstimate:
    """Hutchinson's estimator of the Hessian trace:

        tr H = E_z[zᵀ H z],   z_i = ±1 (Rademacher),   SE = s / √n,

    ``s`` the sample standard deviation of the ``n`` probe values (Hutchinson 1989;
    Rademacher probes have the least variance, ``2 Σ_{i≠j} H_ij²``, among i.i.d. probes).
    Probes are drawn ``block`` at a time until the standard error is at most
    ``rtol · |estimate|`` (after ``min_probes``) or ``max_probes`` are used.
    ``probes="basis"`` uses the ``P`` unit vectors: the exact trace, SE 0.

    ``method`` says how a probe value ``zᵀ H z`` is computed (equal to rounding):
    ``"hvp"`` as ``z · (H z)``, ``block`` products at a time (``HessianOperator.matmat``;
    with ``share_primal=True`` one linearization per block); ``"forward"`` as the second
    directional derivative ``d²/dε² L(θ + ε z)|₀`` (``HessianOperator.quadratic_forms``),
    with no backward pass, about 3x cheaper per probe on a ResNet-20.

    ``deflate`` (variance reduction; off by default) splits off the top eigenspace: for
    ``Q`` (``P × k``) with orthonormal columns and ``Π = I − Q Qᵀ``,

        tr H = tr(Qᵀ H Q) + tr(Π H Π),

    exactly for any such ``Q`` (``Π Q = 0``). The first term is computed exactly (``k``
    quadratic forms), the second by Hutchinson with probes ``Π z``, and the standard error
    is that of the second alone. Its variance ``2 Σ_{i≠j} (Π H Π)_ij²`` no longer holds the
    outliers, which dominate the Hessian of a trained classifier. ``Q`` are the top
    eigenvectors (Gambhir, Stathopoulos & Orginos 2017); with ``k = P`` the estimate is exact.

    Args:
        model, params, x, y: as in ``hessian_operator`` (or a ``HessianOperator`` alone).
        rtol: target relative standard error.
        max_probes, min_probes: bounds on the number of probes.
        block: probes per batched product.
        probes: ``"rademacher"`` (default) or ``"basis"``.
        method: ``"hvp"`` (default) or ``"forward"``.
        deflate: ``None`` (default), the number ``k`` of top eigenvectors to deflate
            (``top_eigenvalues(k=k, seed=seed)`` is run), or an ``Eigen`` of the same
            operator.
        seed: seed of the probes.
        **options: options of ``hessian_operator``.

    Returns:
        A ``TraceEstimate`` (``value``, ``std_error``, ``num_probes``, ``samples``,
        ``converged``, ``deflated``).

    Raises:
        InvalidArgumentError: an unknown ``probes`` or ``method``, ``deflate`` with basis
            probes, or eigenvectors of another size.

    References:
        Hutchinson 1989, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines"; Avron & Toledo 2011, "Randomized algorithms for
        estimating the trace of an implicit symmetric positive semi-definite matrix" (JACM);
        Gambhir, Stathopoulos & Orginos 2017, "Deflation as a method of variance reduction for
        estimating the trace of a matrix inverse" (SIAM J. Sci. Comput.); Meyer, Musco,
        Musco & Woodruff 2021, "Hutch++: optimal stochastic trace estimation" (SOSA), the
        same split with a random sketch for ``Q``.

    Example:
        >>> import jax.numpy as jnp, dynkit as dk
        >>> model = dk.models.mlp(2, [], 1, bias=False)
        >>> params = {"head": {"w": jnp.zeros((2, 1))}}
        >>> x = jnp.array([[2.0, 0.0], [0.0, 1.0]]); y = jnp.zeros((2, 1))
        >>> est = trace(model, params, x, y, loss="mse")    # H = diag(2, .5): zᵀHz = 2.5
        >>> est.value, est.std_error, est.num_probes
        (2.5, 0.0, 10)
    """
    op = _operator(model, params, x, y, options)
    rtol = check_positive("rtol", rtol)
    max_probes = check_integer("max_probes", max_probes)
    min_probes = min(check_integer("min_probes", min_probes, 2), max_probes)
    block = check_integer("block", block)
    if method == "hvp":
        def values(z):
            return np.einsum("ij,ij->i", z, np.asarray(op.matmat(z), op.dtype))
    elif method == "forward":
        def values(z):
            return np.asarray(op.quadratic_forms(z), op.dtype)
    else:
        raise InvalidArgumentError(f"method must be 'hvp' or 'forward', got {method!r}")
    if probes == "basis":
        if deflate is not None:
            raise InvalidArgumentError("basis probes give the exact trace; drop deflate")
        eye = np.eye(op.dim, dtype=op.dtype)
        diag = np.concatenate([values(eye[i:i + block]) for i in range(0, op.dim, block)])
        return TraceEstimate(float(diag.sum()), 0.0, op.dim, diag, True)
    if probes != "rademacher":
        raise InvalidArgumentError(f"probes must be 'rademacher' or 'basis', got {probes!r}")
    Q, exact = _deflation(op, deflate, seed, values, block)
    rng = np.random.default_rng(seed)
    samples: list[float] = []
    while len(samples) < max_probes:
        b = min(block, max_probes - len(samples))
        z = rng.choice(np.array([-1.0, 1.0], op.dtype), size=(b, op.dim))
        if Q is not None:
            z = (z - (z @ Q.T) @ Q).astype(op.dtype)
        samples.extend(values(z).tolist())
        mean, se = _mean_se(samples)
        if len(samples) >= min_probes and se <= rtol * abs(exact + mean):
            break
    mean, se = _mean_se(samples)
    return TraceEstimate(exact + mean, se, len(samples), np.array(samples),
                         se <= rtol * abs(exact + mean), exact)


def _deflation(op: HessianOperator, deflate, seed: int, values, block: int):
    """``(Q, tr(Qᵀ H Q))`` of ``trace(deflate=...)``; ``(None, 0.0)`` without deflation."""
    if deflate is None:
        return None, 0.0
    if isinstance(deflate, Eigen):
        vectors = np.asarray(deflate.vectors)
        if vectors.ndim != 2 or vectors.shape[1] != op.dim:
            raise InvalidArgumentError(f"deflate: eigenvectors of shape {vectors.shape} do not "
                                       f"fit the operator's {op.dim} parameters")
    else:
        vectors = top_eigenvalues(op, k=check_integer("deflate", deflate), seed=seed).vectors
    Q = np.linalg.qr(np.asarray(vectors, np.float64).T)[0].T.astype(op.dtype)  # orthonormal
    exact = float(sum(np.sum(values(Q[i:i + block]), dtype=np.float64)
                      for i in range(0, len(Q), block)))
    return Q, exact


def _mean_se(samples) -> tuple[float, float]:
    s = np.asarray(samples, np.float64)
    return float(s.mean()), float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else np.inf


# ================================================================================ density
@dataclass(frozen=True)
class Density:
    """Spectral density of a Hessian by stochastic Lanczos quadrature.

    Attributes:
        grid: ``(G,)`` eigenvalue grid.
        density: ``(G,)`` the smoothed density ``ρ(t)`` on it (integrates to 1).
        nodes: ``(R, m)`` Ritz values of each of the ``R`` runs.
        weights: ``(R, m)`` their quadrature weights (each row sums to 1).
        outliers: the top eigenvalues separated from the bulk (Ritz values of run 0,
            descending; ``outlier_ritz`` gives the rule).
        bulk_edge: the largest Ritz value of run 0 that is not an outlier (the bulk's upper
            edge).
        sigma: the Gaussian smoothing width.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    outliers: np.ndarray
    bulk_edge: float
    sigma: float

    def moment(self, p: int) -> float:
        """The SLQ estimate of ``tr(Hᵖ) / P``, ``(1/R) Σ_r Σ_j w_rj θ_rjᵖ`` (exact for each
        probe while ``2m − 1 >= p``)."""
        return float(np.mean(np.sum(self.weights * self.nodes ** p, axis=1)))


#: Default ``outlier_gap``: an outlier's gap to the rest is at least this many mean spacings.
OUTLIER_GAP = 10.0


def outlier_ritz(theta, gap: float = OUTLIER_GAP) -> int:
    """The number of top outliers among Lanczos Ritz values, by the *spacing-gap* rule.

    With ``θ_1 >= .. >= θ_m`` the Ritz values, the gap below ``θ_c`` in units of the mean
    spacing of the values below it is

        s_c = (θ_c − θ_{c+1}) / ((θ_{c+1} − θ_m) / (m − c − 1)),

    and the outliers are ``θ_1 .. θ_c*``, ``c*`` the largest ``c <= m/2`` with ``s_c >= gap``
    (0 if none). Inside a bulk, Lanczos Ritz values are spaced like Gauss quadrature nodes of
    the spectral measure, a few mean spacings apart at most (the sparsest at the bulk's edge);
    an isolated eigenvalue converges as a Ritz value alone, a gap of many spacings from the
    rest. Taking the *largest* such ``c`` keeps outliers that are close to each other (a
    cluster of ``C`` class outliers; Papyan 2019) as long as the cluster is separated from
    the bulk. ``c <= m/2`` keeps the mean spacing an average over at least half the values.

    Args:
        theta: the Ritz values, descending.
        gap: the least gap, in mean spacings (default ``OUTLIER_GAP`` = 10).

    Returns:
        ``c*``.

    Example:
        >>> outlier_ritz(np.r_[9.0, 5.0, np.linspace(1, 0, 20)])
        2
    """
    theta = np.asarray(theta, np.float64)
    m = len(theta)
    best = 0
    for c in range(1, m // 2 + 1):
        if m - c - 1 < 1:
            break
        spacing = (theta[c] - theta[-1]) / (m - c - 1)
        if theta[c - 1] - theta[c] >= gap * spacing and theta[c - 1] > theta[c]:
            best = c
    return best


def density(model, params=None, x=None, y=None, *, num_iter: int = 80, num_runs: int = 1,
            num_points: int = 1000, sigma: float | None = None,
            num_outliers: int | None = None, outlier_gap: float = OUTLIER_GAP,
            probes: str = "rademacher", seed: int = 0, **options) -> Density:
    """The eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ):

        ρ(t) = (1/R) Σ_r Σ_j w_rj g_σ(t − θ_rj),   w_rj = (e_1ᵀ s_rj)²,

    ``θ_rj, s_rj`` the eigenpairs of the ``m × m`` Lanczos matrix ``T`` of run ``r`` from a
    random unit probe ``v_r``, ``g_σ`` a Gaussian of width ``σ``. The quadrature is exact
    for polynomials of degree ``<= 2m − 1``: ``Σ_j w_rj θ_rjᵖ = v_rᵀ Hᵖ v_r``, and
    ``E[v vᵀ] = I / P`` makes it an unbiased estimate of ``tr(Hᵖ)/P`` (Golub & Meurant 2010;
    Ghorbani, Krishnan & Xiao 2019). ``probes="basis"`` runs one probe per unit vector
    (``R = P``): the moments are then exact.

    Args:
        model, params, x, y: as in ``hessian_operator`` (or a ``HessianOperator`` alone).
        num_iter: Lanczos steps ``m`` per run (capped at ``P``).
        num_runs: random probes ``R``.
        num_points: grid points ``G``.
        sigma: smoothing width (default 1% of the Ritz-value range).
        num_outliers: ``None`` (default) detects the outliers automatically among the Ritz
            values of run 0 by the spacing-gap rule of ``outlier_ritz``; an integer reports
            that many top eigenvalues instead (e.g. ``C`` for a ``C``-class classifier).
        outlier_gap: the automatic rule's least gap, in mean Ritz spacings (default 10).
        probes: ``"rademacher"`` (normalized ±1 vectors, default) or ``"basis"``.
        seed: seed of the probes.
        **options: options of ``hessian_operator``.

    Returns:
        A ``Density`` (``grid``, ``density``, ``nodes``, ``weights``, ``outliers``,
        ``bulk_edge``, ``sigma``; ``moment(p)``).

    References:
        Golub & Meurant 2010, "Matrices, moments and quadrature with applications"; Ghorbani,
        Krishnan & Xiao 2019, "An investigation into neural net optimization via Hessian
        eigenvalue density" (ICML); Papyan 2019, "Measurements of three-level hierarchical
        structure in the outliers in the spectrum of deepnet Hessians" (ICML).

    Example:
        >>> import jax.numpy as jnp, dynkit as dk
        >>> model = dk.models.mlp(2, [], 1, bias=False)
        >>> params = {"head": {"w": jnp.zeros((2, 1))}}
        >>> x = jnp.array([[2.0, 0.0], [0.0, 1.0]]); y = jnp.zeros((2, 1))
        >>> d = density(model, params, x, y, loss="mse", num_outliers=1)
        >>> round(d.moment(1), 6), d.outliers.round(6).tolist(), round(d.bulk_edge, 6)  # tr H/P
        (1.25, [2.0], 0.5)
    """
    op = _operator(model, params, x, y, options)
    m = min(check_integer("num_iter", num_iter), op.dim)
    if num_outliers is not None:
        num_outliers = check_integer("num_outliers", num_outliers, 0)
        if num_outliers > op.dim:
            raise InvalidArgumentError(f"num_outliers={num_outliers} exceeds P={op.dim}")
    outlier_gap = check_positive("outlier_gap", outlier_gap)
    rng = np.random.default_rng(seed)
    if probes == "basis":
        starts = np.eye(op.dim, dtype=op.dtype)
    elif probes == "rademacher":
        starts = rng.choice(np.array([-1.0, 1.0], op.dtype),
                            size=(check_integer("num_runs", num_runs), op.dim))
    else:
        raise InvalidArgumentError(f"probes must be 'rademacher' or 'basis', got {probes!r}")
    nodes = np.zeros((len(starts), m))
    weights = np.zeros((len(starts), m))
    outliers, edge = np.zeros(0), np.nan
    for r, v0 in enumerate(starts):
        a, b, _ = lanczos(op.matvec, v0, m)
        theta, S, _ = _ritz(a, b)
        nodes[r, :len(theta)] = theta  # an invariant subspace: zero-weight padding
        weights[r, :len(theta)] = S[0] ** 2
        if r == 0:
            c = outlier_ritz(theta, outlier_gap) if num_outliers is None else num_outliers
            outliers = theta[:c]
            edge = float(theta[c]) if c < len(theta) else np.nan
    lo, hi = float(nodes.min()), float(nodes.max())
    sigma = check_positive("sigma", sigma) if sigma is not None else \
        max(0.01 * (hi - lo), 1e-12 * max(abs(lo), abs(hi), 1.0))
    grid = np.linspace(lo - 6 * sigma, hi + 6 * sigma, check_integer("num_points", num_points, 2))
    kernel = np.exp(-0.5 * ((grid[None, :] - nodes.ravel()[:, None]) / sigma) ** 2)
    kernel /= sigma * np.sqrt(2 * np.pi)
    rho = (weights.ravel() @ kernel) / len(starts)
    return Density(grid, rho, nodes, weights, outliers, edge, float(sigma))


# ======================================================================= gradient overlap
@dataclass(frozen=True)
class Overlap:
    """The gradient's overlap with the top Hessian eigenspace.

    Attributes:
        value: ``‖P_k g‖² / ‖g‖²`` in ``[0, 1]``.
        per_direction: ``(v_i · g)² / ‖g‖²`` for each eigenvector.
        eigenvalues: the ``k`` eigenvalues used.
    """

    value: float
    per_direction: np.ndarray
    eigenvalues: np.ndarray


def gradient_overlap(model, params=None, x=None, y=None, *, k: int = 10, eigen: Eigen | None = None,
                     **options) -> Overlap:
    """Fraction of the loss gradient in the top-``k`` Hessian eigenspace:

        overlap = ‖P_k g‖² / ‖g‖² = Σ_{i ≤ k} (v_iᵀ g)² / ‖g‖²,

    ``v_i`` the eigenvectors of the ``k`` largest eigenvalues. Gur-Ari, Roberts & Dyer (2018)
    find it near 1 after a short transient, with ``k`` the number of classes.

    Args:
        model, params, x, y: as in ``hessian_operator`` (or a ``HessianOperator`` alone).
        k: the eigenspace dimension.
        eigen: precomputed ``top_eigenvalues`` of the same operator (then ``k`` is its size).
        **options: options of ``hessian_operator`` and of ``top_eigenvalues`` (``tol``,
            ``max_iter``, ``seed``).

    Returns:
        An ``Overlap`` (``value``, ``per_direction``, ``eigenvalues``).

    Raises:
        InvalidArgumentError: a zero gradient (the overlap is undefined at a critical point).

    References:
        Gur-Ari, Roberts & Dyer 2018, "Gradient descent happens in a tiny subspace"
        (arXiv:1812.04754).

    Example:
        >>> import jax.numpy as jnp, dynkit as dk
        >>> model = dk.models.mlp(2, [], 1, bias=False)
        >>> params = {"head": {"w": jnp.zeros((2, 1))}}
        >>> x = jnp.array([[2.0, 0.0], [0.0, 1.0]]); y = jnp.array([[1.0], [0.0]])
        >>> round(gradient_overlap(model, params, x, y, k=1, loss="mse").value, 6)
        1.0
    """
    eig_opts = {key: options.pop(key) for key in ("tol", "max_iter", "seed") if key in options}
    op = _operator(model, params, x, y, options)
    if eigen is None:
        eigen = top_eigenvalues(op, k=k, **eig_opts)
    _, g = op.value_and_gradient()
    g = np.asarray(g, np.float64)
    gg = float(g @ g)
    if gg == 0:
        raise InvalidArgumentError("gradient_overlap is undefined for a zero gradient")
    per = (np.asarray(eigen.vectors, np.float64) @ g) ** 2 / gg
    return Overlap(float(per.sum()), per, eigen.eigenvalues)


# ============================================================================ per layer
def layer_spectra(model, params, x, y, *, k: int = 1, with_trace: bool = True,
                  rtol: float = 0.05, layers=None, seed: int = 0, trace_method: str = "hvp",
                  **options) -> pd.DataFrame:
    """Top eigenvalues and trace of each layer's diagonal Hessian block ``∇²_{θ_l} L``.

    Args:
        model, params, x, y: as in ``hessian_operator``.
        k: top eigenvalues per layer (capped at the layer's size).
        with_trace: also estimate each block's trace (Hutchinson, relative SE ``rtol``).
        rtol: target relative standard error of the traces.
        layers: the layers (default every layer with trainable parameters).
        seed: seed of the Lanczos start and the probes.
        trace_method: ``"hvp"`` (default) or ``"forward"``, as in ``trace(method=)``.
        **options: ``loss``, ``ggn``, ``batch_size``, ``dtype`` of ``hessian_operator``.

    Returns:
        A tidy DataFrame with columns ``layer, metric, value``: metrics ``lambda_1 .. lambda_k``
        and, with ``with_trace``, ``trace`` and ``trace_se``.

    Example:
        >>> import jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> params = model.init(jax.random.PRNGKey(0))
        >>> x = jax.random.normal(jax.random.PRNGKey(1), (8, 3)); y = np.arange(8) % 2
        >>> df = layer_spectra(model, params, x, y, with_trace=False)
        >>> df[["layer", "metric"]].values.tolist()
        [['fc0', 'lambda_1'], ['head', 'lambda_1']]
    """
    rows = []
    for layer in select_layers(model, params, layers):
        op = hessian_operator(model, params, x, y, layers=layer, **options)
        eig = top_eigenvalues(op, k=min(k, op.dim), seed=seed)
        rows += [{"layer": layer, "metric": f"lambda_{i + 1}", "value": float(v)}
                 for i, v in enumerate(eig.eigenvalues)]
        if with_trace:
            est = trace(op, rtol=rtol, seed=seed, method=trace_method)
            rows += [{"layer": layer, "metric": "trace", "value": est.value},
                     {"layer": layer, "metric": "trace_se", "value": est.std_error}]
    return pd.DataFrame(rows, columns=["layer", "metric", "value"])
