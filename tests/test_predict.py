"""Tests of dynkit.theory.predict: golden neural-tangents numbers and independent checks."""

import json
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import predict

DATA = Path(__file__).parent / "data" / "neural_tangents"


def toy_kernel_fn(x1, x2=None, get=("nngp", "ntk")):
    """An analytic PSD pair: NNGP = RBF + 0.3, NTK = NNGP + 0.5 x.x' (independent of stax)."""
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    sq = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, -1)
    nngp = jnp.exp(-0.5 * sq) + 0.3
    ntk = nngp + 0.5 * x1 @ x2.T
    k = SimpleNamespace(nngp=nngp, ntk=ntk)
    return getattr(k, get) if isinstance(get, str) else k


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(7, 3))
    y_train = rng.normal(size=(7, 2))
    x_test = rng.normal(size=(4, 3))
    return x_train, y_train, x_test


@pytest.mark.slow
def test_golden_neural_tangents_ensemble():
    from dynkit.theory import stax

    d = np.load(DATA / "predict_gd_mse_ensemble.npz")
    spec = json.loads((DATA / "manifest.json").read_text())["predict_gd_mse_ensemble"]
    _, _, kernel_fn = stax.from_spec(spec)
    pred = predict.gradient_descent_mse_ensemble(
        kernel_fn, d["x_train"], d["y_train"], diag_reg=float(d["diag_reg"]),
        learning_rate=float(d["learning_rate"]),
    )
    both = pred(t=d["t"], x_test=d["x_test"], get=("nngp", "ntk"), compute_cov=True)
    both_inf = pred(t=None, x_test=d["x_test"], compute_cov=True)
    for g in ("nngp", "ntk"):
        for got, key in [
            (getattr(both, g).mean, f"mean_{g}"),
            (getattr(both, g).covariance, f"cov_{g}"),
            (getattr(both_inf, g).mean, f"mean_{g}_inf"),
            (getattr(both_inf, g).covariance, f"cov_{g}_inf"),
        ]:
            ref = d[key]
            assert got.shape == ref.shape, key
            np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max(),
                                       err_msg=key)


@pytest.mark.parametrize("g", ["nngp", "ntk"])
@pytest.mark.slow
def test_large_t_equals_infinity(problem, g):
    x_train, y_train, x_test = problem
    pred = predict.gradient_descent_mse_ensemble(toy_kernel_fn, x_train, y_train, diag_reg=1e-2)
    big = pred(t=np.array([1e7]), x_test=x_test, get=g, compute_cov=True)
    inf = pred(t=None, x_test=x_test, get=g, compute_cov=True)
    np.testing.assert_allclose(big.mean[0], inf.mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(big.covariance[0], inf.covariance, rtol=1e-8, atol=1e-10)


def test_t0_is_prior(problem):
    x_train, y_train, x_test = problem
    pred = predict.gradient_descent_mse_ensemble(toy_kernel_fn, x_train, y_train)
    out = pred(t=0.0, x_test=x_test, compute_cov=True)
    prior = toy_kernel_fn(x_test, None, "nngp")
    for g in (out.nngp, out.ntk):
        assert g.mean.shape == (4, 2) and g.covariance.shape == (4, 4)
        np.testing.assert_allclose(g.mean, 0.0, atol=1e-14)
        np.testing.assert_allclose(g.covariance, prior, atol=1e-12)


@pytest.mark.slow
def test_ensemble_covariance_is_pushforward_of_prior(problem):
    """Exact check: f_t = f_0 + Theta_xX T_t (Y - f_0(X)) is affine in f_0 ~ GP(0, K); the
    ensemble covariance must be A Sigma A^T. Push the columns of a square root of the joint
    prior through gradient_descent_mse (NNGP regime: the train kernel is K itself)."""
    x_train, y_train, x_test = problem
    ts = np.array([0.3, 2.0, 15.0])
    pred = predict.gradient_descent_mse_ensemble(toy_kernel_fn, x_train, y_train, diag_reg=0.0,
                                                 learning_rate=0.7)
    x_all = np.concatenate([x_train, x_test])
    n = len(x_train)
    for g in ("nngp", "ntk"):
        theta = toy_kernel_fn(x_all, None, g)
        joint = np.asarray(toy_kernel_fn(x_all, None, "nngp"))
        root = np.linalg.cholesky(joint + 1e-13 * np.eye(len(x_all)))
        lin = predict.gradient_descent_mse(theta[:n, :n], y_train, learning_rate=0.7)
        ktd = theta[n:, :n]
        mean_f = lin(ts, np.zeros((n, 2)), np.zeros((4, 2)), ktd)[1]
        cols = []
        for j in range(len(x_all)):
            f0 = root[:, j:j + 1]
            cols.append((lin(ts, f0[:n], f0[n:], ktd)[1] - mean_f)[..., 0])
        cols = np.stack(cols, -1)  # (t, test, j)
        cov_ref = np.einsum("tij,tkj->tik", cols, cols)
        out = pred(t=ts, x_test=x_test, get=g, compute_cov=True)
        np.testing.assert_allclose(out.covariance, cov_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out.mean, mean_f, rtol=1e-10, atol=1e-12)


def test_train_set_predictions_are_exact_dynamics(problem):
    x_train, y_train, _ = problem
    pred = predict.gradient_descent_mse_ensemble(toy_kernel_fn, x_train, y_train)
    ts = np.array([0.5, 4.0])
    out = pred(t=ts, get="ntk", compute_cov=True)
    theta = np.asarray(toy_kernel_fn(x_train, None, "ntk"))
    k = np.asarray(toy_kernel_fn(x_train, None, "nngp"))
    lam, v = np.linalg.eigh(theta)
    for i, t in enumerate(ts):
        e = v @ np.diag(np.exp(-lam * t / y_train.size)) @ v.T
        np.testing.assert_allclose(out.mean[i], y_train - e @ y_train, atol=1e-10)
        np.testing.assert_allclose(out.covariance[i], e @ k @ e, atol=1e-10)
    inf = pred(t=None, get="ntk", compute_cov=True)
    np.testing.assert_allclose(inf.mean, y_train)
    np.testing.assert_allclose(inf.covariance, 0.0)


def test_gp_inference_matches_direct_solve(problem):
    x_train, y_train, x_test = problem
    kdd, ktd = toy_kernel_fn(x_train), toy_kernel_fn(x_test, x_train)
    ktt = toy_kernel_fn(x_test, None, "nngp")
    reg = 0.05
    out = predict.gp_inference(kdd, y_train, diag_reg=reg)(("nngp", "ntk"), ktd, ktt)
    n = len(x_train)
    for g in ("nngp", "ntk"):
        a = np.asarray(getattr(kdd, g))
        a = a + reg * np.trace(a) / n * np.eye(n)
        b = np.asarray(getattr(ktd, g))
        np.testing.assert_allclose(getattr(out, g).mean, b @ np.linalg.solve(a, y_train),
                                   rtol=1e-10)
    k_dd, k_td = np.asarray(kdd.nngp), np.asarray(ktd.nngp)
    k_reg = k_dd + reg * np.trace(k_dd) / n * np.eye(n)
    cov_nngp = np.asarray(ktt) - k_td @ np.linalg.solve(k_reg, k_td.T)
    np.testing.assert_allclose(out.nngp.covariance, cov_nngp, rtol=1e-9, atol=1e-12)
    th_dd, th_td = np.asarray(kdd.ntk), np.asarray(ktd.ntk)
    th_reg = th_dd + reg * np.trace(th_dd) / n * np.eye(n)
    m = th_td @ np.linalg.inv(th_reg)
    cov_ntk = np.asarray(ktt) + m @ k_dd @ m.T - m @ k_td.T - k_td @ m.T
    np.testing.assert_allclose(out.ntk.covariance, cov_ntk, rtol=1e-9, atol=1e-12)
    # relative diag_reg == absolute diag_reg * tr(K)/n
    absolute = predict.gp_inference(kdd.ntk, y_train, reg * np.trace(th_dd) / n,
                                    diag_reg_absolute_scale=True)("ntk", ktd.ntk)
    np.testing.assert_allclose(absolute, out.ntk.mean, rtol=1e-12)


def test_gradient_descent_mse_matches_euler(problem):
    """df/dt = -(lr/N) Theta (f - y) integrated by small explicit Euler steps."""
    x_train, y_train, x_test = problem
    theta = np.asarray(toy_kernel_fn(np.concatenate([x_train, x_test]), None, "ntk"))
    n, lr = len(x_train), 0.8
    rng = np.random.default_rng(1)
    f_tr, f_te = rng.normal(size=(n, 2)), rng.normal(size=(4, 2))
    fn = predict.gradient_descent_mse(theta[:n, :n], y_train, learning_rate=lr)
    t_end = 3.0

    def euler(steps):
        dt = t_end / steps
        g_tr, g_te = f_tr.copy(), f_te.copy()
        for _ in range(steps):
            r = g_tr - y_train
            g_tr, g_te = (g_tr - dt * lr / y_train.size * theta[:n, :n] @ r,
                          g_te - dt * lr / y_train.size * theta[n:, :n] @ r)
        return np.concatenate([g_tr, g_te])

    coarse, fine = euler(1500), euler(3000)
    got = np.concatenate(fn(t_end, f_tr, f_te, theta[n:, :n]))
    # Euler's error is first order in dt: halving dt halves it, and the Richardson
    # extrapolation 2 fine - coarse is second order accurate.
    err_c, err_f = np.abs(coarse - got).max(), np.abs(fine - got).max()
    assert 1.8 < err_c / err_f < 2.2
    np.testing.assert_allclose(got, 2 * fine - coarse, rtol=1e-6, atol=1e-7)
    # t=None is the t -> infinity limit
    inf_tr, inf_te = fn(None, f_tr, f_te, theta[n:, :n])
    _, big_te = fn(1e9, f_tr, f_te, theta[n:, :n])
    np.testing.assert_allclose(inf_tr, y_train, atol=1e-12)
    np.testing.assert_allclose(big_te, inf_te, rtol=1e-8, atol=1e-10)
    # only test outputs when fx_train_0 is None (treated as 0)
    only = fn(np.array([1.0, 2.0]), None, f_te, theta[n:, :n])
    assert only.shape == (2, 4, 2)


def test_trace_axes_block_diagonal_equivalence(problem):
    """trace_axes=(-1,) with K equals trace_axes=() with the zipped kernel K (x) I."""
    x_train, y_train, x_test = problem
    k = np.asarray(toy_kernel_fn(x_train, None, "ntk"))
    kt = np.asarray(toy_kernel_fn(x_test, x_train, "ntk"))
    eye = np.eye(2)
    k_full = np.einsum("ab,ij->aibj", k, eye).transpose(0, 2, 1, 3)  # zipped (n, n, 2, 2)
    kt_full = np.einsum("ab,ij->aibj", kt, eye).transpose(0, 2, 1, 3)
    ts = np.array([0.0, 1.0, 3.0])
    f_tr = np.zeros_like(y_train)
    f_te = np.zeros((4, 2))
    a = predict.gradient_descent_mse(k, y_train, diag_reg=1e-3)(ts, f_tr, f_te, kt)
    b = predict.gradient_descent_mse(k_full, y_train, diag_reg=1e-3, trace_axes=())(
        ts, f_tr, f_te, kt_full)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)


def test_bad_inputs(problem):
    x_train, y_train, x_test = problem
    k = toy_kernel_fn(x_train, None, "ntk")
    with pytest.raises(InvalidArgumentError, match="y_train"):
        predict.gradient_descent_mse(k, np.full_like(y_train, np.nan))
    with pytest.raises(ShapeMismatchError, match="k_train_train"):
        predict.gradient_descent_mse(k[:5, :5], y_train)
    with pytest.raises(InvalidArgumentError, match="diag_reg"):
        predict.gp_inference(k, y_train, diag_reg=-1.0)
    fn = predict.gradient_descent_mse(k, y_train)
    with pytest.raises(InvalidArgumentError, match="t must be"):
        fn(-1.0, 0.0)
    with pytest.raises(InvalidArgumentError, match="k_test_train"):
        fn(1.0, 0.0, np.zeros((4, 2)))
    pred = predict.gradient_descent_mse_ensemble(toy_kernel_fn, x_train, y_train)
    with pytest.raises(InvalidArgumentError, match="get"):
        pred(t=1.0, x_test=x_test, get="nngpp")
    with pytest.raises(InvalidArgumentError, match="x_test"):
        pred(t=1.0, x_test=np.full_like(x_test, np.nan))
    with pytest.raises(InvalidArgumentError, match="NNGP and NTK"):
        predict.gp_inference(k, y_train)("ntk", toy_kernel_fn(x_test, x_train, "ntk"),
                                         toy_kernel_fn(x_test, None, "nngp"))
