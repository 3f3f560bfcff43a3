"""NTK dynamics metrics (dynkit.analyses.ntk_dynamics): closed forms, symmetries, an
independent kernel-ridge implementation, Taylor-remainder order, a saved training run and
the registry entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from sklearn.kernel_ridge import KernelRidge

import dynkit
from dynkit.analyses import ntk_dynamics as nd
from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models import mlp
from dynkit.registry import METRICS
from dynkit.theory import empirical


def _psd(n, seed=0, rank=None):
    a = np.random.default_rng(seed).normal(size=(n, rank or n))
    return a @ a.T


# ----------------------------------------------------------------------------- kernel metrics
def test_kernel_distance():
    K, L = _psd(6, 0), _psd(6, 1)
    assert nd.kernel_distance(K, 3.7 * K) == pytest.approx(0.0, abs=1e-14)
    assert nd.kernel_distance(K, L) == pytest.approx(nd.kernel_distance(L, K), abs=1e-14)
    # orthogonal in the Frobenius inner product -> 1; opposite -> 2
    assert nd.kernel_distance(np.diag([1.0, 0]), np.diag([0, 1.0])) == pytest.approx(1.0)
    assert nd.kernel_distance(K, -K) == pytest.approx(2.0)
    with pytest.raises(ShapeMismatchError):
        nd.kernel_distance(K, K[:5, :5])
    with pytest.raises(InvalidArgumentError):
        nd.kernel_distance(K, np.zeros_like(K))


def test_centered_alignment():
    y = np.array([0, 1, 2, 0, 1, 2, 2, 0])
    Y = np.eye(3)[y]
    assert nd.centered_alignment(Y @ Y.T, y) == pytest.approx(1.0, abs=1e-12)
    K = _psd(8, 3)
    a = nd.centered_alignment(K, y)
    # brute force with the explicit centring matrix H = I - 11ᵀ/n
    H = np.eye(8) - 1 / 8
    Kc, T = H @ K @ H, H @ Y @ Y.T @ H
    assert a == pytest.approx(np.sum(Kc * T) / np.linalg.norm(Kc) / np.linalg.norm(T), rel=1e-12)
    # invariant to scaling and to adding a constant kernel (centring removes it)
    assert nd.centered_alignment(2.5 * K + 7.0, y) == pytest.approx(a, rel=1e-12)
    assert -1 <= a <= 1
    with pytest.raises(InvalidArgumentError, match="labels"):
        nd.centered_alignment(K, y, num_classes=2)
    with pytest.raises(ShapeMismatchError, match="square"):
        nd.centered_alignment(np.ones((8, 8, 2, 2)), y)


def test_spectrum_effective_rank_label_power():
    K = _psd(7, 4)
    np.testing.assert_allclose(nd.spectrum(K, 3), np.sort(np.linalg.eigvalsh(K))[::-1][:3])
    assert nd.effective_rank(np.eye(9)) == pytest.approx(9.0)
    assert nd.effective_rank(np.diag([2.0, 2.0, 0, 0])) == pytest.approx(2.0)
    assert nd.effective_rank(_psd(6, 5, rank=1)) == pytest.approx(1.0)
    # p = (1/2, 1/4, 1/4): exp(H) = exp(1.5 log 2) = 2^1.5
    assert nd.effective_rank(np.diag([2.0, 1.0, 1.0])) == pytest.approx(2**1.5)
    y = np.random.default_rng(6).integers(0, 3, 7)
    assert nd.label_power_fraction(K, y, 7) == pytest.approx(1.0)
    # kernel with known eigenvectors: only the first carries labels
    Y = np.eye(2)[np.array([0, 0, 1, 1])]
    v = (Y[:, 0] - Y[:, 1]) / 2  # orthogonal to 1, carries the label contrast
    basis = np.linalg.qr(np.column_stack([v, np.ones(4) / 2, np.eye(4)[:, :2]]))[0]
    Kv = basis @ np.diag([5.0, 1.0, 0.5, 0.1]) @ basis.T
    # top eigenvector v = (1, 1, -1, -1)/2: ‖vᵀY‖² / ‖Y‖² = (1 + 1) / 4
    want = np.sum((basis[:, :1].T @ Y) ** 2) / np.sum(Y**2)
    assert nd.label_power_fraction(Kv, np.array([0, 0, 1, 1]), 1) == pytest.approx(want)
    assert want == pytest.approx(0.5)


def test_ntk_regression_matches_sklearn():
    rng = np.random.default_rng(0)
    K = _psd(10, 7)
    Kxt = rng.normal(size=(4, 10))
    y = rng.normal(size=(10, 2))
    kr = KernelRidge(alpha=0.3, kernel="precomputed").fit(K, y)
    # sklearn's alpha is an absolute ridge: diag_reg_absolute_scale=True (formerly ridge=0.3)
    np.testing.assert_allclose(
        nd.ntk_regression(K, Kxt, y, diag_reg=0.3, diag_reg_absolute_scale=True),
        kr.predict(Kxt), rtol=1e-10)
    labels = rng.integers(0, 3, 10)
    np.testing.assert_allclose(nd.ntk_regression(K, K, labels), np.eye(3)[labels], atol=1e-8)
    with pytest.raises(ShapeMismatchError):
        nd.ntk_regression(K, Kxt[:, :5], y)
    with pytest.raises(InvalidArgumentError):
        nd.ntk_regression(K, Kxt, y, diag_reg=-1.0)


def test_ntk_regression_relative_diag_reg():
    """Relative diag_reg (the default, as in theory.predict) is absolute diag_reg · tr(K)/n."""
    rng = np.random.default_rng(1)
    K = _psd(8, 6)
    Kxt = rng.normal(size=(3, 8))
    y = rng.normal(size=(8, 2))
    reg = 0.05
    absolute = reg * np.trace(K) / len(K)
    want = Kxt @ np.linalg.solve(K + absolute * np.eye(8), y)  # closed form, by hand
    got = nd.ntk_regression(K, Kxt, y, diag_reg=reg)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(
        got, nd.ntk_regression(K, Kxt, y, diag_reg=absolute, diag_reg_absolute_scale=True),
        rtol=1e-12)


# ----------------------------------------------------------------------------- linearization
@pytest.mark.slow
def test_linearized_predictions():
    model = mlp(3, [16, 16], 2, parameterization="ntk", W_std=1.4, b_std=0.1)
    p0 = model.init(jax.random.PRNGKey(0), jnp.float64)
    direction = model.init(jax.random.PRNGKey(1), jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    same = nd.linearized_predictions(model, p0, p0, x)
    np.testing.assert_allclose(same.linear, same.network, atol=1e-14)
    assert same.error == pytest.approx(0.0, abs=1e-14)
    eps = np.array([0.008, 0.004, 0.002, 0.001])  # asymptotic regime of the remainder
    errs = []
    for e in eps:
        pt = jax.tree.map(lambda a, d, e=e: a + e * d, p0, direction)
        out = nd.linearized_predictions(model, p0, pt, x)
        errs.append(out.error)
        # the first-order term is exactly the directional derivative
        fp = model.apply(jax.tree.map(lambda a, d, e=e: a + 1e-6 * e * d, p0, direction), x)
        np.testing.assert_allclose(out.linear - out.initial, (fp - out.initial) / 1e-6,
                                   rtol=1e-4, atol=1e-9)
    slope = np.polyfit(np.log(eps), np.log(errs), 1)[0]
    assert abs(slope - 2.0) < 0.1, slope  # remainder O(‖Δθ‖²)
    # a model linear in its parameters is its own linearization
    lin = nd.linearized_predictions(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))},
                                    {"w": jnp.arange(6.0).reshape(3, 2)}, x)
    np.testing.assert_allclose(lin.linear, lin.network, atol=1e-12)
    with pytest.raises(ShapeMismatchError):
        nd.linearized_predictions(lambda p, x: x @ p["w"], {"w": jnp.ones((3, 2))},
                                  {"w": jnp.ones((3, 3))}, x)


# ----------------------------------------------------------------------------- runs
def _run(tmp_path, model, steps):
    p = model.init(jax.random.PRNGKey(0), jnp.float64)
    direction = model.init(jax.random.PRNGKey(1), jnp.float64)
    paths = []
    for s in steps:
        pt = jax.tree.map(lambda a, d, s=s: a + 0.01 * s * d, p, direction)
        paths.append(dynkit.save_checkpoint(tmp_path / f"step_{s:04d}.safetensors", model, pt,
                                            step=s))
    return paths


def test_ntk_series_on_saved_run(tmp_path):
    model = mlp(3, [12], 3, parameterization="ntk", W_std=1.4, b_std=0.1)
    _run(tmp_path, model, [0, 10, 20])
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (6, 3)))
    y = np.array([0, 1, 2, 0, 1, 2])
    df = nd.ntk_series(tmp_path, x, y, progress=False)
    assert list(df.columns) == ["step", "epoch", "metric", "value"]  # the tidy series schema
    table = df.pivot(index="step", columns="metric", values="value")
    assert list(table.index) == [0, 10, 20]
    ckpts = list(dynkit.load_run(tmp_path))
    Ks = [np.asarray(empirical.ntk_fn(c.model)(x, None, c.params)) for c in ckpts]
    assert table.loc[0, "kernel_distance_init"] == 0.0
    assert table.loc[20, "kernel_distance_init"] == pytest.approx(nd.kernel_distance(Ks[0], Ks[2]))
    assert table.loc[20, "kernel_distance_prev"] == pytest.approx(nd.kernel_distance(Ks[1], Ks[2]))
    assert table.loc[20, "kernel_velocity"] == pytest.approx(table.loc[20, "kernel_distance_prev"]
                                                             / 10)
    assert np.isnan(table.loc[0, "kernel_velocity"])
    assert table.loc[10, "centered_alignment"] == pytest.approx(nd.centered_alignment(Ks[1], y))
    assert table.loc[10, "effective_rank"] == pytest.approx(nd.effective_rank(Ks[1]))
    # any iterable of checkpoints, subsampled
    sub = nd.ntk_series(ckpts, x, every=2, progress=False)
    assert sorted(sub.step.unique()) == [0, 20]
    with pytest.raises(InvalidArgumentError):
        nd.ntk_series(ckpts, x, every=0)


def test_registry_metric():
    assert "ntk" in METRICS
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float64)
    y = rng.integers(0, 3, 40)
    data = dynkit.data.from_arrays(x, y, test_fraction=0.25)
    model = mlp(4, [10], 3)
    params = model.init(jax.random.PRNGKey(0), jnp.float64)
    df = METRICS.get("ntk").func(model, params, data)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["metric", "value"]
    vals = dict(zip(df.metric, df.value))
    K = np.asarray(empirical.ntk_fn(model)(data.x_train, None, params))
    assert vals["lambda_max"] == pytest.approx(np.linalg.eigvalsh(K)[-1])
    assert vals["centered_alignment"] == pytest.approx(
        nd.centered_alignment(K, data.y_train, num_classes=3))
