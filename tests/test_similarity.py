"""Representation similarity measures against invariances, brute force and direct formulas."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import sqrtm

from dynkit.analyses import similarity as sim
from dynkit.analyses import similarity_stream as ss
from dynkit.errors import InvalidArgumentError, ShapeMismatchError

SETTINGS = settings(max_examples=8, deadline=None)


def orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------- independent references
def hsic_ustat_bruteforce(K, L):
    """HSIC as the U-statistic E[k_ij l_ij] + E[k_ij] E[l_qr] - 2 E[k_ij l_iq] over distinct
    index tuples, by explicit enumeration (tiny N)."""
    n = K.shape[0]
    idx = range(n)
    t1 = np.mean([K[i, j] * L[i, j] for i, j in itertools.permutations(idx, 2)])
    t2 = np.mean([K[i, j] * L[q, r] for i, j, q, r in itertools.permutations(idx, 4)])
    t3 = np.mean([K[i, j] * L[i, q] for i, j, q in itertools.permutations(idx, 3)])
    return t1 + t2 - 2 * t3


def cca_reference(X, Y):
    """Canonical correlations: SVD of Σxx^{-1/2} Σxy Σyy^{-1/2} (full-rank inputs)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    n = X.shape[0]
    sxx, syy, sxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    wx, wy = np.linalg.inv(np.real(sqrtm(sxx))), np.linalg.inv(np.real(sqrtm(syy)))
    u, rho, vt = np.linalg.svd(wx @ sxy @ wy, full_matrices=False)
    return rho, Xc @ wx @ u, Yc @ wy @ vt.T


def data(seed, n=30, dx=5, dy=4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx))
    Y = X[:, :dy] @ rng.normal(size=(dy, dy)) + 0.5 * rng.normal(size=(n, dy)) + 1.0
    return rng, X, Y


# --------------------------------------------------------------------- CKA
@SETTINGS
@given(st.integers(0, 10_000), st.floats(0.1, 10.0), st.booleans(), st.sampled_from(["linear", "rbf"]))
def test_cka_invariant_to_orthogonal_and_isotropic_scaling(seed, scale, debiased, kernel):
    rng, X, Y = data(seed)
    base = sim.cka(X, Y, kernel=kernel, debiased=debiased)
    moved = sim.cka(scale * X @ orthogonal(rng, 5), Y @ orthogonal(rng, 4) + 3.0, kernel=kernel,
                    debiased=debiased)
    assert moved == pytest.approx(base, abs=1e-10)


@SETTINGS
@given(st.integers(0, 10_000))
def test_cka_not_invariant_to_nonisotropic_scaling(seed):
    _, X, Y = data(seed)
    D = np.diag([10.0, 1.0, 1.0, 0.1, 0.1])
    assert abs(sim.cka(X @ D, Y) - sim.cka(X, Y)) > 1e-3
    assert sim.cka(X, X @ D) < 1 - 1e-3


def test_linear_cka_equals_feature_space_and_gram_forms():
    _, X, Y = data(1, n=20, dx=7, dy=3)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    feature = np.sum((Yc.T @ Xc) ** 2) / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    H = np.eye(20) - 1 / 20
    K, L = X @ X.T, Y @ Y.T
    gram = np.trace(K @ H @ L @ H) / np.sqrt(np.trace(K @ H @ K @ H) * np.trace(L @ H @ L @ H))
    assert sim.cka(X, Y) == pytest.approx(feature, rel=1e-12)
    assert sim.cka(X, Y) == pytest.approx(gram, rel=1e-12)
    assert sim.cka_gram(K, L) == pytest.approx(gram, rel=1e-12)
    assert sim.cka(X.astype(np.float32), Y.astype(np.float32)) == pytest.approx(gram, rel=1e-5)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_debiased_hsic_equals_bruteforce_ustatistic(n):
    rng = np.random.default_rng(n)
    X, Y = rng.normal(size=(n, 3)) + 2.0, rng.normal(size=(n, 2))
    K, L = X @ X.T, Y @ Y.T
    ref = hsic_ustat_bruteforce(K, L)
    assert sim.hsic(K, L, debiased=True) == pytest.approx(ref, rel=1e-10)
    cka_ref = ref / np.sqrt(hsic_ustat_bruteforce(K, K) * hsic_ustat_bruteforce(L, L))
    assert sim.cka(X, Y, debiased=True) == pytest.approx(cka_ref, rel=1e-10)
    assert sim.cka_gram(K, L, debiased=True) == pytest.approx(cka_ref, rel=1e-10)
    # U-centering gives the same estimator
    assert np.sum(ss.u_center(K) * ss.u_center(L)) / (n * (n - 3)) == pytest.approx(ref, rel=1e-10)


def test_rbf_cka_matches_gram_route_and_identity():
    _, X, Y = data(3, n=25)
    med = np.median(((X[:, None] - X[None]) ** 2).sum(-1))
    K = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1) / (2 * 0.5**2 * med))
    assert np.allclose(sim.gram_rbf(X, 0.5), K)
    assert sim.cka(X, X, kernel="rbf") == pytest.approx(1.0)
    assert 0 < sim.cka(X, Y, kernel="rbf", bandwidth=0.5) < 1


# --------------------------------------------------------------------- streaming CKA
def test_minibatch_one_batch_equals_debiased_full_and_stream_is_exact():
    _, X, Y = data(4, n=50)
    assert ss.minibatch_cka(X, Y, batch_size=50) == pytest.approx(sim.cka(X, Y, debiased=True),
                                                                  rel=1e-10)
    for debiased in (False, True):
        exact = ss.streamed_linear_cka(ss.batches(X.astype(np.float32), Y, 7), debiased)
        assert exact == pytest.approx(sim.cka(X.astype(np.float32), Y, debiased=debiased),
                                      rel=1e-9)


def test_minibatch_cka_converges_to_debiased_full():
    """Many batches: within 4 jackknife standard errors (over batches) of the debiased CKA."""
    rng = np.random.default_rng(5)
    n, b = 6000, 100
    Z = rng.normal(size=(n, 6))
    X = np.maximum(Z @ rng.normal(size=(6, 20)), 0)
    Y = np.tanh(Z[:, :3] @ rng.normal(size=(3, 10))) + rng.normal(size=(n, 10))
    full = sim.cka(X, Y, debiased=True)
    acc = ss.MinibatchCKA(1, 1)
    parts = []
    for x, y in ss.batches(X, Y, b):
        one = ss.MinibatchCKA(1, 1)
        one.update([x], [y])
        parts.append((one.xy[0, 0], one.xx[0], one.yy[0]))
        acc.update([x], [y])
    est = acc.result()[0, 0]
    p = np.array(parts)
    tot = p.sum(0)
    loo = [(tot - r)[0] / np.sqrt((tot - r)[1] * (tot - r)[2]) for r in p]
    k = len(p)
    se = np.sqrt((k - 1) / k * np.sum((np.array(loo) - np.mean(loo)) ** 2))
    assert abs(est - full) < 4 * se
    assert 0.05 < full < 0.95 and se < 0.05


def test_minibatch_layer_matrix_equals_pairwise():
    rng = np.random.default_rng(6)
    xs = [rng.normal(size=(40, d)) for d in (3, 5)]
    ys = [xs[0] @ rng.normal(size=(3, 4)), rng.normal(size=(40, 2)), xs[1] ** 2]
    acc = ss.MinibatchCKA(2, 3)
    for s in range(0, 40, 10):
        acc.update([x[s:s + 10] for x in xs], [y[s:s + 10] for y in ys])
    M = acc.result()
    for i, j in itertools.product(range(2), range(3)):
        assert M[i, j] == pytest.approx(ss.minibatch_cka(xs[i], ys[j], batch_size=10), rel=1e-10)


# --------------------------------------------------------------------- CCA family
@pytest.mark.parametrize("seed", [0, 1])
def test_cca_svcca_pwcca_equal_direct_whitened_cca(seed):
    _, X, Y = data(seed, n=40, dx=5, dy=3)
    rho, hx, hy = cca_reference(X, Y)
    assert np.allclose(sim.cca(X, Y), rho, atol=1e-10)
    assert sim.svcca(X, Y, keep=None) == pytest.approx(rho.mean(), abs=1e-10)
    # PWCCA weights from the smaller side (Y): alpha_i = sum_j |<h_i/|h_i|, y_j - mean>|
    h = hy / np.linalg.norm(hy, axis=0)
    alpha = np.abs(h.T @ (Y - Y.mean(0))).sum(1)
    assert sim.pwcca(X, Y) == pytest.approx(alpha @ rho / alpha.sum(), abs=1e-10)
    h = hx[:, :3] / np.linalg.norm(hx[:, :3], axis=0)
    alpha = np.abs(h.T @ (X - X.mean(0))).sum(1)
    assert sim.pwcca(X, Y, weight_side="x") == pytest.approx(alpha @ rho / alpha.sum(), abs=1e-10)


def test_svcca_keep_conventions_and_google_options():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 6)) * np.array([10, 5, 3, 0.1, 0.1, 0.1])
    Y = rng.normal(size=(60, 4))
    Xc = X - X.mean(0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.99) + 1)
    assert sim.svcca(X, Y, keep=0.99) == pytest.approx(
        sim.svcca(U[:, :k] * s[:k], Y, keep=None), abs=1e-12)
    Uy, sy, _ = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    assert sim.svcca(X, Y, keep=2) == pytest.approx(
        sim.svcca(U[:, :2] * s[:2], Uy[:, :2] * sy[:2], keep=None), abs=1e-12)
    # google/svcca's threshold summary: mean of the first i coefficients
    rho = sim.cca(X, Y, keep=0.99)
    i = next(i for i in range(len(rho) + 1) if rho[:i].sum() / rho.sum() >= 0.5)
    assert sim.svcca(X, Y, keep=0.99, threshold=0.5) == pytest.approx(rho[:i].mean())
    # google/svcca's epsilon: regularized whitening of covariances scaled by their max entry
    eps = 1e-2
    Ux, sx, _ = np.linalg.svd(X - X.mean(0), full_matrices=False)
    Xr = Ux * sx
    Uy, sy, _ = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    Yc = Uy * sy  # google/svcca's SVCCA tutorial feeds the SVD-reduced activations
    sxx, syy, sxy = Xr.T @ Xr, Yc.T @ Yc, Xr.T @ Yc
    mx, my = np.abs(sxx).max(), np.abs(syy).max()
    wx = np.linalg.inv(np.real(sqrtm(sxx / mx + eps * np.eye(6))))
    wy = np.linalg.inv(np.real(sqrtm(syy / my + eps * np.eye(4))))
    ref = np.linalg.svd(wx @ (sxy / np.sqrt(mx * my)) @ wy, compute_uv=False)
    assert np.allclose(sim.cca(X, Y, keep=None, epsilon=eps), ref, atol=1e-10)


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 4))
def test_svcca_invariant_to_invertible_maps_of_kept_subspace(seed, k):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(40, 5)), rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    Yc = Y - Y.mean(0)
    U, s, _ = np.linalg.svd(Yc, full_matrices=False)
    Yk = U[:, :k] * s[:k]
    A = rng.normal(size=(k, k)) + 3 * np.eye(k)
    assert sim.svcca(X, Y, keep=k) == pytest.approx(sim.svcca(X, Yk @ A, keep=k), abs=1e-9)
    B = rng.normal(size=(5, 5)) + 3 * np.eye(5)
    assert sim.svcca(X, Y, keep=None) == pytest.approx(sim.svcca(X @ B, Y, keep=None), abs=1e-9)


# --------------------------------------------------------------------- Procrustes, RSA
@SETTINGS
@given(st.integers(0, 10_000), st.floats(0.1, 10.0))
def test_procrustes_zero_for_rotated_copy(seed, scale):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(25, 4))
    assert sim.procrustes(X, scale * X @ orthogonal(rng, 4)) == pytest.approx(0.0, abs=1e-10)
    Y = rng.normal(size=(25, 6))
    d = sim.procrustes(X, Y)
    assert 0 < d <= 2
    # min over orthogonal Q of |X - Y Q|^2 on normalized centered data (Schoenemann), with X
    # zero-padded to Y's width
    Xc, Yc = np.pad(X - X.mean(0), ((0, 0), (0, 2))), Y - Y.mean(0)
    Xc, Yc = Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc)
    u, _, vt = np.linalg.svd(Yc.T @ Xc, full_matrices=False)
    assert d == pytest.approx(np.sum((Xc - Yc @ u @ vt) ** 2), abs=1e-10)


def test_rsa_correlation_distance():
    rng = np.random.default_rng(8)
    X, Y = rng.normal(size=(12, 5)), rng.normal(size=(12, 7))
    R = np.array([[1 - np.corrcoef(a, b)[0, 1] for b in X] for a in X])
    assert np.allclose(sim.rdm(X), R)
    iu = np.triu_indices(12, 1)
    from scipy.stats import pearsonr, spearmanr
    assert sim.rsa(X, Y) == pytest.approx(spearmanr(sim.rdm(X)[iu], sim.rdm(Y)[iu])[0])
    assert sim.rsa(X, Y, compare="pearson") == pytest.approx(
        pearsonr(sim.rdm(X)[iu], sim.rdm(Y)[iu])[0])
    assert sim.rsa(X, 3 * X - 1) == pytest.approx(1.0)


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [sim.cka, sim.svcca, sim.pwcca, sim.procrustes, sim.rsa,
                                ss.minibatch_cka])
def test_bad_input_errors(fn):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(12, 3))
    with pytest.raises(ShapeMismatchError, match="same inputs"):
        fn(X, X[:10])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        fn(X, np.where(np.eye(12, 3) > 0, np.nan, X))
    with pytest.raises(InvalidArgumentError, match="constant"):
        fn(X, np.ones((12, 3)))


def test_debiased_needs_four_inputs_and_other_arguments():
    X = np.arange(6.0).reshape(3, 2) ** 2
    with pytest.raises(InvalidArgumentError, match="at least 4"):
        sim.cka(X, X, debiased=True)
    with pytest.raises(InvalidArgumentError, match="at least 4"):
        ss.u_center(np.eye(3))
    with pytest.raises(InvalidArgumentError, match="kernel"):
        sim.cka(X, X, kernel="poly")
    with pytest.raises(InvalidArgumentError, match="keep"):
        sim.svcca(X, X, keep=1.5)
    with pytest.raises(ShapeMismatchError, match=r"\(N, D\)"):
        sim.cka(np.ones(5), np.ones(5))


def test_minibatch_self_comparison_reuses_grams():
    rng = np.random.default_rng(10)
    xs = [rng.normal(size=(12, 3)), rng.normal(size=(12, 4))]
    a, b = ss.MinibatchCKA(2, 2), ss.MinibatchCKA(2, 2)
    a.update(xs, xs)
    b.update(xs, list(xs))
    assert np.allclose(a.result(), b.result()) and np.allclose(np.diag(a.result()), 1.0)
    c = ss.MinibatchCKA(1, 1)
    const = [np.ones((12, 3))]
    c.update(const, const)
    with pytest.raises(InvalidArgumentError, match="constant"):
        c.result()


def google_pwcca_reference(acts1, acts2):
    """google/svcca's compute_pwcca, neurons x datapoints layout, epsilon = 0, written out
    step by step from its documented procedure (x branch: acts1 has fewer neurons)."""
    numx = acts1.shape[0]
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:numx, :numx], cov[:numx, numx:], cov[numx:, numx:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)

    def invsqrt(a):
        w, v = np.linalg.eigh(np.linalg.pinv(a))
        return v @ np.diag(np.sqrt(w)) @ v.T

    u, s, _ = np.linalg.svd(invsqrt(sxx) @ sxy @ invsqrt(syy))
    means = acts1.mean(1, keepdims=True)
    dirns = u.T @ (acts1 - means) + means
    P, _ = np.linalg.qr(dirns.T)
    w = np.sum(np.abs(P.T @ acts1.T), axis=1)
    return np.sum(w / w.sum() * s)


def test_pwcca_google_convention():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(80, 3)) + 2.0
    Y = np.column_stack([X @ rng.normal(size=(3, 2)), rng.normal(size=(80, 3))]) \
        + 0.3 * rng.normal(size=(80, 5))
    ref = google_pwcca_reference(X.T, Y.T)
    assert sim.pwcca(X, Y, convention="google") == pytest.approx(ref, rel=1e-10)
    # the mirrored branch: Y has fewer neurons
    assert sim.pwcca(Y, X, convention="google") == pytest.approx(ref, rel=1e-10)
    assert sim.pwcca(X, Y, convention="google") != pytest.approx(sim.pwcca(X, Y), rel=1e-3)
    with pytest.raises(InvalidArgumentError, match="convention"):
        sim.pwcca(X, Y, convention="nope")
    with pytest.raises(InvalidArgumentError, match="no keep"):
        sim.pwcca(X, Y, keep=2, convention="google")
