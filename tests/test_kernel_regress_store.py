"""Regression and spectra from a stored kernel: conjugate gradients streaming the store equal a
float64 dense solve to 1e-6 relative; predict.gp_inference accepts the stored kernel; the
randomized top eigenvalues equal numpy's eigvalsh."""

import numpy as np
import pytest
import scipy.linalg as sl

from dynkit.theory import predict, stax
from dynkit.theory.kernel_regress_store import solve, stored_mean, top_eigenvalues

pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    d = tmp_path_factory.mktemp("k")
    kfn = stax.serial(stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(),
                      stax.Dense(8, W_std=1.5, b_std=0.1), stax.Relu(), stax.Dense(1))[2]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 5)).astype(np.float32)
    xt = rng.standard_normal((20, 5)).astype(np.float32)
    kdd = stax.batch(kfn, 32, store=str(d / "dd.zarr"), progress=False)(x, None, "ntk")
    ktd = stax.batch(kfn, 32, store=str(d / "td.zarr"), progress=False)(xt, x, "ntk")
    return kdd, ktd, rng.standard_normal((90, 3))


@pytest.mark.parametrize("diag_reg", [1e-1, 1e-3])
def test_stored_regression_equals_dense_solve(stored, diag_reg):
    kdd, ktd, y = stored
    K, Kt = np.asarray(kdd, np.float64), np.asarray(ktd, np.float64)
    lam = diag_reg * np.trace(K) / len(K)
    ref = Kt @ sl.solve(K + lam * np.eye(len(K)), y, assume_a="pos")
    got = stored_mean(kdd, y, ktd, diag_reg=diag_reg)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    sol = solve(kdd, y[:, 0], diag_reg)
    assert sol.alpha.shape == (90,) and sol.residual <= 1e-10 and sol.iterations < 90
    # predict.gp_inference takes the stored kernel where it takes an array
    mean = predict.gp_inference(kdd, y, diag_reg=diag_reg)("ntk", k_test_train=ktd)
    np.testing.assert_allclose(np.asarray(mean, np.float64), ref, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())  # float32 output
    dense = predict.gp_inference(K, y, diag_reg=diag_reg)("ntk", k_test_train=Kt)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(dense), rtol=1e-3,
                               atol=1e-3 * np.abs(ref).max())  # in-memory float32 Cholesky


def test_top_eigenvalues_of_stored_kernel(stored):
    kdd = stored[0]
    ref = np.linalg.eigvalsh(np.asarray(kdd, np.float64))[::-1][:4]
    np.testing.assert_allclose(top_eigenvalues(kdd, 4), ref, rtol=1e-6)


def test_predictors_read_a_stored_kernel_like_an_array(stored):
    kdd, ktd, y = stored
    y = y.astype(np.float32)
    on_store = predict.gradient_descent_mse(kdd, y, diag_reg=1e-2)(5.0, k_test_train=ktd)
    in_memory = predict.gradient_descent_mse(np.asarray(kdd), y, diag_reg=1e-2)(
        5.0, k_test_train=np.asarray(ktd))
    assert np.array_equal(np.asarray(on_store), np.asarray(in_memory))
