"""Kernel regression and spectra from a stored kernel, without loading it.

Kernel ridge regression / the NTK-GP mean ``μ = K_td (K_dd + λ I)⁻¹ Y`` (Lee et al. 2019,
eq. 16; ``λ = diag_reg · tr K / N`` as in :mod:`dynkit.theory.predict`) is solved by
**conjugate gradients streaming row blocks** of the stored ``K_dd``: each iteration reads the
kernel once, tile row by tile row, and the driver holds ``O(N · tile)`` numbers. We chose CG
over a blocked Cholesky on ``dask.array`` because Cholesky needs a second ``N²`` array for its
factor (written to scratch storage out of core), a task graph of ``O(T³)`` tile operations for
``T`` tile rows, and dense-tile working memory on every worker; CG needs none of these, reads
the store as it is (mirrored tiles included). The price is one full read of the kernel per
iteration (the number of iterations is returned), so the solve is preconditioned by a
randomized Nyström approximation of rank ``ℓ`` (Frangella, Tropp & Udell 2023), built from one
extra pass with ``ℓ`` columns: kernels of real data have a few large eigenvalues (the constant
mode of a ReLU NTK holds most of the trace), which plain or Jacobi-preconditioned CG pays for
in ``√κ`` passes with ``κ = (λ_max + λ)/λ``, while the preconditioned system has
``κ ≈ (λ_ℓ + λ)/λ``. The driver holds the ``N × ℓ`` factor besides ``O(N · tile)`` kernel
entries.

The top eigenvalues come from randomized subspace iteration (Halko, Martinsson & Tropp 2011,
Alg. 4.4 + 5.3) with the same streamed products.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory.kernel_store_read import StoredKernel

__all__ = ["CGSolution", "kernel_diagonal", "matmul", "nystrom_preconditioner", "solve", "stored_mean",
           "top_eigenvalues"]


@dataclasses.dataclass(frozen=True)
class CGSolution:
    """``alpha`` solving ``(K + λ I) alpha = y``; ``iterations`` passes over the kernel;
    ``residual`` the final ``max_j ||r_j|| / ||y_j||``; ``reg`` the ``λ`` used."""

    alpha: np.ndarray
    iterations: int
    residual: float
    reg: float


def _check_square(k, what):
    if not isinstance(k, StoredKernel):
        raise InvalidArgumentError(f"{what} must be a StoredKernel (open_kernels(path).ntk), "
                                   f"got {type(k).__name__}")
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ShapeMismatchError(f"{what} must be a square (N, N) kernel (trace_axes over "
                                 f"outputs), got shape {k.shape}")


def matmul(k, v: np.ndarray) -> np.ndarray:
    """``K @ v`` in float64, reading ``k`` (a :class:`StoredKernel` or an array) one tile row
    at a time."""
    v = np.asarray(v, np.float64)
    if not isinstance(k, StoredKernel):
        return np.asarray(k, np.float64) @ v
    out = np.empty((k.shape[0],) + v.shape[1:], np.float64)
    for r0, rows in k.rows():
        out[r0:r0 + rows.shape[0]] = rows.astype(np.float64) @ v
    return out


def kernel_diagonal(k: StoredKernel) -> np.ndarray:
    """``diag K``, read from the diagonal tiles only."""
    t = k.layout.tile
    return np.concatenate([np.diagonal(k.read(s, min(s + t, k.shape[0]), s,
                                              min(s + t, k.shape[0])))
                           for s in range(0, k.shape[0], t)]).astype(np.float64)


def nystrom_preconditioner(k, reg: float, rank: int, seed: int = 0):
    """``r -> P⁻¹ r`` for the randomized Nyström preconditioner of ``K + λ I`` (Frangella,
    Tropp & Udell 2023, Alg. 2.1 and eq. 5.3): with ``K ≈ U Λ̂ Uᵀ`` of rank ``ℓ`` from one
    streamed product ``Y = K Ω`` (``Ω`` an orthonormalized Gaussian ``N × ℓ``, shifted by
    ``ν = √N · eps · ‖Y‖`` for stability), ``P⁻¹ = (λ̂_ℓ + λ) U (Λ̂ + λ I)⁻¹ Uᵀ + I − U Uᵀ``.

    Args:
        k: the stored (or in-memory) ``(N, N)`` kernel.
        reg: the ridge ``λ``.
        rank: ``ℓ`` (at most ``N``).
        seed: the seed of ``Ω``.

    Returns:
        The function applying ``P⁻¹`` to an ``(N, T)`` array.

    References:
        Frangella, Tropp & Udell 2023, "Randomized Nyström preconditioning", SIAM J. Matrix
        Anal. Appl. 44(2).
    """
    n = k.shape[0]
    omega = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, min(rank, n))))[0]
    y = matmul(k, omega)
    nu = np.sqrt(n) * np.finfo(np.float64).eps * np.linalg.norm(y, 2)
    y += nu * omega
    w, v = np.linalg.eigh(omega.T @ y)         # Ωᵀ Y_ν = V W Vᵀ; B = Y_ν (Ωᵀ Y_ν)^(-1/2)
    keep = w > w.max() * np.finfo(np.float64).eps * len(w)
    b = y @ (v[:, keep] / np.sqrt(w[keep]))
    u, sigma, _ = np.linalg.svd(b, full_matrices=False)
    lam = np.maximum(sigma ** 2 - nu, 0.0)

    def apply(r):
        ur = u.T @ r
        return (lam[-1] + reg) * (u @ (ur / (lam + reg)[:, None])) + r - u @ ur

    return apply


def solve(k: StoredKernel, y, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
          tol: float = 1e-10, maxiter: int | None = None, rank: int = 100) -> CGSolution:
    """Solve ``(K + λ I) alpha = y`` by conjugate gradients (Hestenes & Stiefel 1952),
    preconditioned by a rank-``rank`` randomized Nyström approximation of ``K``
    (:func:`nystrom_preconditioner`), one independent recursion per column of ``y``,
    streaming ``K``.

    Args:
        k: the stored train-train kernel ``(N, N)``.
        y: targets ``(N,)`` or ``(N, T)``.
        diag_reg: ``λ / (tr K / N)`` (or ``λ`` itself with ``diag_reg_absolute_scale``).
        tol: stop when every column's residual norm is below ``tol · ||y_j||``.
        maxiter: the most passes (default ``N``).
        rank: the rank of the preconditioner (one extra pass; ``N × rank`` numbers held).

    Returns:
        A :class:`CGSolution` (``iterations`` counts the CG passes, not the sketch).

    Raises:
        InvalidArgumentError: no convergence within ``maxiter`` (raise ``diag_reg``), or
            ``diag_reg`` / ``rank`` out of range.
    """
    _check_square(k, "k_train_train")
    y = np.asarray(y, np.float64)
    vec = y.ndim == 1
    y2 = y[:, None] if vec else y.reshape(y.shape[0], -1)
    if y2.shape[0] != k.shape[0]:
        raise ShapeMismatchError(f"y has {y2.shape[0]} rows, the kernel {k.shape[0]}")
    if diag_reg < 0:
        raise InvalidArgumentError(f"diag_reg must be >= 0, got {diag_reg}")
    if int(rank) < 1:
        raise InvalidArgumentError(f"rank must be a positive integer, got {rank!r}")
    reg = float(diag_reg) * (1.0 if diag_reg_absolute_scale else kernel_diagonal(k).mean())
    precond = nystrom_preconditioner(k, reg, int(rank))
    maxiter = maxiter or k.shape[0]
    x = np.zeros_like(y2)
    r = y2.copy()
    z = precond(r)
    p = z.copy()
    rz = np.sum(r * z, axis=0)
    ynorm = np.maximum(np.linalg.norm(y2, axis=0), np.finfo(float).tiny)
    res = np.max(np.linalg.norm(r, axis=0) / ynorm)
    it = 0
    while res > tol and it < maxiter:
        ap = matmul(k, p) + reg * p
        step = rz / np.sum(p * ap, axis=0)
        x += step * p
        r -= step * ap
        z = precond(r)
        rz_new = np.sum(r * z, axis=0)
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
        res = np.max(np.linalg.norm(r, axis=0) / ynorm)
    if res > tol:
        raise InvalidArgumentError(f"conjugate gradients did not reach tol={tol:g} in {it} "
                                   f"passes (residual {res:.2e}); raise diag_reg or maxiter")
    alpha = x[:, 0] if vec else x.reshape(y.shape)
    return CGSolution(alpha, it, float(res), reg)


def stored_mean(k_train_train: StoredKernel, y_train, k_test_train=None, diag_reg=0.0,
                diag_reg_absolute_scale: bool = False, tol: float = 1e-10):
    """Kernel ridge regression / NTK-GP mean ``μ = K_td (K_dd + λ I)⁻¹ Y`` (Lee et al. 2019,
    eq. 16) with ``K_dd`` streamed from the store (``k_test_train``: an array or a stored
    rectangular kernel ``(N_test, N)``, also streamed; ``None``: the train outputs ``K_dd α``).

    Args:
        k_train_train: the stored ``(N, N)`` kernel.
        y_train: targets ``(N,)`` or ``(N, T)``.
        k_test_train: the test-train kernel, or ``None``.
        diag_reg, diag_reg_absolute_scale, tol: as for :func:`solve`.

    Returns:
        The mean, ``(N_test,)`` or ``(N_test, T)``.

    References:
        Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under
        gradient descent", eq. 16; Hestenes & Stiefel 1952 (conjugate gradients).
    """
    sol = solve(k_train_train, y_train, diag_reg, diag_reg_absolute_scale, tol)
    k_td = k_train_train if k_test_train is None else k_test_train
    if k_td.shape[-1] != k_train_train.shape[0]:
        raise ShapeMismatchError(f"k_test_train has {k_td.shape[-1]} columns, the train kernel "
                                 f"{k_train_train.shape[0]} rows")
    return matmul(k_td, sol.alpha)


def top_eigenvalues(k: StoredKernel, n: int = 5, oversample: int = 10, power_iters: int = 8,
                    seed: int = 0) -> np.ndarray:
    """The ``n`` largest eigenvalues of a stored symmetric kernel, by randomized subspace
    iteration: ``Q = orth(K^{q+1} Ω)`` for a Gaussian ``Ω`` with ``n + oversample`` columns
    (re-orthonormalized after each product), then the eigenvalues of ``Qᵀ K Q``
    (Halko, Martinsson & Tropp 2011, Alg. 4.4 and 5.3). Each product streams the kernel once.

    Args:
        k: the stored ``(N, N)`` kernel.
        n: how many eigenvalues.
        oversample: extra columns of the sketch; power_iters: ``q``.
        seed: the seed of ``Ω``.

    Returns:
        ``(n,)`` eigenvalues, largest first.

    References:
        Halko, Martinsson & Tropp 2011, "Finding structure with randomness".
    """
    _check_square(k, "k")
    if not k.symmetric:
        raise InvalidArgumentError("top_eigenvalues needs a symmetric kernel (stored with "
                                   "x2=None)")
    m = min(k.shape[0], n + oversample)
    q = np.linalg.qr(matmul(k, np.random.default_rng(seed).standard_normal((k.shape[0], m))))[0]
    for _ in range(power_iters):
        q = np.linalg.qr(matmul(k, q))[0]
    small = q.T @ matmul(k, q)
    return np.sort(np.linalg.eigvalsh((small + small.T) / 2))[::-1][:n]
