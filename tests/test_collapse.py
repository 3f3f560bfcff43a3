"""Neural-collapse metrics against closed forms, symmetries and an independent dense reference."""

from types import SimpleNamespace

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import dynkit as dk
from dynkit.analyses import collapse as co
from dynkit.analyses import collapse_imbalanced as ci
from dynkit.analyses import collapse_stream as co_stream
from dynkit.analyses.collapse_stream import CollapseAccumulator
from dynkit.errors import InvalidArgumentError, ShapeMismatchError, UnsupportedLayerError
from dynkit.registry import METRICS


# --------------------------------------------------------------------- independent reference
def reference(h, y, W=None, b=None, global_mean="samples", centered=True):
    """Plain dense NC1-NC4 straight from the definitions (D x D matrices, np.linalg.pinv)."""
    classes = np.unique(y)
    C, N = len(classes), len(y)
    mu = np.stack([h[y == c].mean(0) for c in classes])
    mu_g = h.mean(0) if global_mean == "samples" else mu.mean(0)
    sw = sum(np.outer(h[i] - mu[np.searchsorted(classes, y[i])],
                      h[i] - mu[np.searchsorted(classes, y[i])]) for i in range(N)) / N
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / C
    out = {"nc1": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / C,
           "nc1_trace_ratio": np.trace(sw) / np.trace(sb)}
    V = mu - mu_g if centered else mu
    norms = np.linalg.norm(V, axis=1)
    out["nc2_equinorm"] = norms.std() / norms.mean()
    cos = [V[i] @ V[j] / norms[i] / norms[j] for i in range(C) for j in range(i + 1, C)]
    out["nc2_equiangle"] = np.std(cos)
    out["nc2_equiangle_shift"] = np.mean(np.abs(np.array(cos) + 1 / (C - 1)))
    G = V @ V.T
    P = np.eye(C) - 1 / C
    out["nc2_etf"] = np.linalg.norm(G / np.linalg.norm(G) - P / np.linalg.norm(P))
    # CDNV (Galanti et al. 2022): σ_c² = mean squared distance to the class mean
    var = [np.mean(np.sum((h[y == c] - mu[k]) ** 2, axis=1)) for k, c in enumerate(classes)]
    out["nc1_cdnv"] = np.mean([(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2))
                               for i in range(C) for j in range(i + 1, C)])
    # GNC2 (Wu & Papyan 2024): log(1/distance) of normalized means, mean and variance
    u = V / norms[:, None]
    k = [np.log(1 / np.linalg.norm(u[i] - u[j])) for i in range(C) for j in range(i + 1, C)]
    out["gnc2_log"], out["gnc2_log_energy"] = np.var(k), np.mean(k)
    if W is not None:
        Wp = W[classes]
        wn = np.linalg.norm(Wp, axis=1)
        out["nc2_equinorm_W"] = wn.std() / wn.mean()
        cos_w = [Wp[i] @ Wp[j] / wn[i] / wn[j] for i in range(C) for j in range(i + 1, C)]
        out["nc2_equiangle_W"] = np.std(cos_w)
        out["nc2_equiangle_shift_W"] = np.mean(np.abs(np.array(cos_w) + 1 / (C - 1)))
        WWt = Wp @ Wp.T
        out["nc2_etf_W"] = np.linalg.norm(WWt / np.linalg.norm(WWt) - P / np.sqrt(C - 1))
        out["nc3"] = np.sum((Wp / np.linalg.norm(Wp) - V / np.linalg.norm(V)) ** 2)
        H = V.T  # D x C, columns = (centered) class means; Zhu et al.'s W (C x D) @ H
        WH = Wp @ H
        out["nc3_etf"] = np.linalg.norm(WH / np.linalg.norm(WH) - P / np.sqrt(C - 1))
        if b is not None:
            out["nc3_bias"] = np.linalg.norm(Wp @ mu_g + b[classes])
        pred = np.argmax(h @ W.T + (0 if b is None else b), axis=1)
        ncc = classes[np.argmin(((h[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)]
        out["nc4"] = np.mean(ncc != pred)
    return out


def random_problem(seed, N=120, D=9, C=4, spread=0.7):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    y[:C] = np.arange(C)
    h = rng.normal(size=(C, D))[y] * 2 + spread * rng.normal(size=(N, D))
    W = rng.normal(size=(C, D))
    b = rng.normal(size=C)
    return h, y, W, b


def assert_metrics(res, ref, keys=None, rtol=1e-10):
    keys = keys or [k for k in res if k in ref]
    assert keys
    for k in keys:
        np.testing.assert_allclose(res[k], ref[k], rtol=rtol, atol=1e-12, err_msg=k)


def simplex_etf(C, D, seed=0):
    """Rows: the C vertices of a simplex ETF embedded by a random isometry in R^D."""
    Q = np.linalg.qr(np.random.default_rng(seed).normal(size=(D, C)))[0]
    return np.sqrt(C / (C - 1)) * (np.eye(C) - 1 / C) @ Q.T


# --------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("method", ["subspace", "dense"])
def test_exact_simplex_etf_has_no_collapse_residual(method):
    C, D, n = 5, 8, 7
    M = simplex_etf(C, D)
    y = np.repeat(np.arange(C), n)
    res = co.neural_collapse(M[y], y, W=M, b=np.zeros(C), method=method)
    # issue #12 added the published variants nc1_cdnv, nc2_equiangle_shift_W, nc2_etf_W,
    # nc3_etf, nc3_bias and gnc2_log(_energy) to the key set; all vanish on a perfect ETF except
    # the log energy, which sits at its minimum -½ log(2C/(C-1)) (module docstring)
    assert set(res) == {"nc1", "nc1_cdnv", "nc2_equinorm", "nc2_equiangle",
                        "nc2_equiangle_shift", "nc2_etf", "gnc2_log", "gnc2_log_energy",
                        "nc2_equinorm_W", "nc2_equiangle_W", "nc2_equiangle_shift_W",
                        "nc2_etf_W", "nc3", "nc3_etf", "nc3_bias", "nc4"}
    assert res.gnc2_log_energy == pytest.approx(-0.5 * np.log(2 * C / (C - 1)), rel=1e-12)
    for k, v in res.items():
        if k != "gnc2_log_energy":
            assert abs(v) < 1e-10, (k, v)


def test_result_is_frozen_mapping_with_frame():
    h, y, W, b = random_problem(0)
    res = co.neural_collapse(h, y, W, b)
    assert res.nc1 == res["nc1"] and dict(res)["nc3"] == res.nc3
    df = res.to_frame()
    assert list(df.columns) == ["metric", "value"] and len(df) == len(res)
    with pytest.raises(TypeError):
        res.metrics["nc1"] = 0.0
    with pytest.raises(AttributeError):
        _ = res.nc9


def test_nc1_closed_form_two_classes_isotropic():
    # two classes at ±a e_1 with within-class noise exactly ±s along e_1 and e_2:
    # Σ_B = a² e1e1ᵀ, Σ_W = s²/2 (e1e1ᵀ + e2e2ᵀ) -> NC1 = (s²/2)/a² / C
    a, s = 3.0, 0.5
    base = np.array([[s, 0], [-s, 0], [0, s], [0, -s]])
    h = np.concatenate([base + [a, 0], base - [a, 0]])
    y = np.repeat([0, 1], 4)
    res = co.neural_collapse(h, y)
    assert res.nc1 == pytest.approx(s**2 / 2 / a**2 / 2, rel=1e-12)


def ill_conditioned_problem():
    """C = 4 classes in D = 3 with Σ_B = diag(1/2, 1/2, ε²) exactly (dyadic numbers, so every
    sum below is exact): λ_min/λ_max = 2ε² ≈ 1.8e-12 lies between numpy's pinv cut-off (1e-15)
    and the former 1e-10."""
    eps = 2.0**-20
    means = np.array([[1, 0, eps], [-1, 0, eps], [0, 1, -eps], [0, -1, -eps]])
    dev = np.array([[0.25, 0.5, 0.125], [0.5, -0.25, 0.375], [-0.125, 0.25, 0.5]]) / 8
    h = np.stack([means[c] + s * d for c in range(4) for d in dev for s in (1, -1)])
    y = np.repeat(np.arange(4), 2 * len(dev))
    return h, y, means


def test_nc1_pinv_cutoff_is_numpys_default_and_rcond_reproduces_a_custom_one():
    h, y, means = ill_conditioned_problem()
    C, N = 4, len(y)
    Sw = sum(np.outer(h[i] - means[y[i]], h[i] - means[y[i]]) for i in range(N)) / N
    Sb = sum(np.outer(m, m) for m in means) / C
    assert np.linalg.cond(Sb) == pytest.approx(1 / (2 * 2.0**-40))
    expected = np.trace(Sw @ np.linalg.pinv(Sb)) / C
    for method in ("subspace", "dense"):
        res = co.neural_collapse(h, y, method=method, global_mean="classes")
        assert res.nc1 == pytest.approx(expected, rel=1e-8)
        custom = co.neural_collapse(h, y, method=method, global_mean="classes", rcond=1e-10)
        assert custom.nc1 == pytest.approx(
            np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10)) / C, rel=1e-8)
    # the former 1e-10 cut-off dropped the ε-direction and its within-class spread with it
    assert expected > 1e6 * custom.nc1
    with pytest.raises(InvalidArgumentError, match="rcond"):
        co.neural_collapse(h, y, rcond=-1.0)


def test_cdnv_closed_form_and_log_energy_lower_bound():
    # two classes at ±a e_1, within spread ±s along e_2: σ² = s², ‖μ_0 - μ_1‖² = 4a²
    a, s = 1.5, 0.25
    h = np.array([[a, s], [a, -s], [-a, s], [-a, -s]])
    res = co.neural_collapse(h, np.array([0, 0, 1, 1]))
    assert res.nc1_cdnv == pytest.approx(s**2 / (4 * a**2), rel=1e-14)
    # Jensen + ‖Σ u_c‖² >= 0: the mean log(1/‖u_c - u_c'‖) is >= -½ log(2C/(C-1)), with
    # equality only for a simplex ETF; random means stay above it
    for seed in range(5):
        hh, y, _, _ = random_problem(seed, C=5)
        r = co.neural_collapse(hh, y)
        assert r.gnc2_log_energy > -0.5 * np.log(2 * 5 / 4) + 1e-6 and r.gnc2_log > 0


def test_in_memory_blocks_and_stream_agree_on_every_key(monkeypatch):
    h, y, W, b = random_problem(8, N=400, D=10, C=5)
    h32 = h.astype(np.float32)
    whole = co.neural_collapse(h32, y, W, b)

    def batches():  # uneven batches, labels unsorted, logits given
        for i in range(0, len(y), 53):
            yield h32[i:i + 53], y[i:i + 53], h32[i:i + 53] @ W.T + b

    streamed = co.neural_collapse_stream(batches, W, b)
    monkeypatch.setattr(co_stream, "BLOCK_BYTES", 8 * 10 * 7)  # blocks of 7 rows
    blocked = co.neural_collapse(h32, y, W, b)
    assert set(whole) == set(streamed) == set(blocked) and "nc3_bias" in whole
    for k in whole:
        np.testing.assert_allclose(streamed[k], whole[k], rtol=1e-12, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(blocked[k], whole[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_nc4_counts_predictions_of_a_class_without_samples():
    h, y, W, b = random_problem(9, C=3)
    W5 = np.concatenate([W, np.zeros((2, W.shape[1]))])
    b5 = np.concatenate([b, [0.0, 1e6]])  # class 4 has no sample but wins every prediction
    res = co.neural_collapse(h, y, W5, b5)
    assert res.nc4 == 1.0
    assert res.nc3 == co.neural_collapse(h, y, W, b).nc3  # W rows of absent classes dropped


# --------------------------------------------------------------------- independent reference
@pytest.mark.parametrize("global_mean", ["samples", "classes"])
@pytest.mark.parametrize("nc2_variant", ["centered", "uncentered"])
def test_dense_matches_reference(global_mean, nc2_variant):
    h, y, W, b = random_problem(1)
    ref = reference(h, y, W, b, global_mean, nc2_variant == "centered")
    for method in ("subspace", "dense"):
        res = co.neural_collapse(h, y, W, b, method=method, global_mean=global_mean,
                                 nc2_variant=nc2_variant)
        assert_metrics(res, ref)
    tr = co.neural_collapse(h, y, nc1_variant="trace_ratio", global_mean=global_mean)
    assert tr.nc1 == pytest.approx(ref["nc1_trace_ratio"], rel=1e-10)


@pytest.mark.parametrize("method", ["subspace", "dense"])
def test_stream_matches_reference_on_random_batches(method):
    h, y, W, b = random_problem(2, N=301, D=11, C=5)
    ref = reference(h, y, W, b)
    logits = h @ W.T + b

    def batches():  # uneven batches, some missing classes, labels unsorted
        for i in range(0, len(y), 37):
            yield h[i:i + 37], y[i:i + 37], logits[i:i + 37]

    res = co.neural_collapse_stream(batches, W, b, method=method)
    assert_metrics(res, ref)
    no_w = co.neural_collapse_stream(lambda: ((a, c) for a, c, _ in batches()), method=method)
    assert "nc3" not in no_w and "nc4" not in no_w
    assert_metrics(no_w, ref, ["nc1", "nc2_equinorm", "nc2_equiangle", "nc2_etf"])


def test_subspace_nc1_equals_dense_when_d_exceeds_n():
    rng = np.random.default_rng(3)
    C, D, N = 6, 80, 40
    y = np.arange(N) % C
    h = rng.normal(size=(C, D))[y] + 0.3 * rng.normal(size=(N, D))
    ref = reference(h, y)
    sub = co.neural_collapse(h, y, method="subspace")
    dense = co.neural_collapse(h, y, method="dense")
    assert sub.nc1 == pytest.approx(ref["nc1"], rel=1e-10)
    assert dense.nc1 == pytest.approx(ref["nc1"], rel=1e-10)


def test_accumulator_chan_merge_matches_direct_scatter():
    h, y, _, _ = random_problem(4, N=200, D=6, C=3)
    acc = CollapseAccumulator(dense=True)
    for i in range(0, 200, 23):
        acc.update(h[i:i + 23] + 1e6, y[i:i + 23])  # large offset: cancellation-free merge
    st_ = acc.stats()
    mu = np.stack([h[y == c].mean(0) for c in range(3)])
    centered = h - mu[y]
    np.testing.assert_allclose(st_.means, mu + 1e6, rtol=1e-14)
    np.testing.assert_allclose(st_.scatter, centered.T @ centered, rtol=1e-8)
    assert st_.within_trace == pytest.approx(np.sum(centered**2), rel=1e-8)


def test_nc4_with_given_predictions():
    h, y, _, _ = random_problem(5)
    pred = np.random.default_rng(0).integers(0, 4, len(y))
    mu = np.stack([h[y == c].mean(0) for c in range(4)])
    ncc = np.argmin(((h[:, None] - mu[None]) ** 2).sum(-1), axis=1)
    res = co.neural_collapse(h, y, predictions=pred)
    assert res.nc4 == np.mean(ncc != pred)
    logits = np.eye(4)[pred]
    assert co.neural_collapse(h, y, predictions=logits).nc4 == res.nc4


# --------------------------------------------------------------------- symmetry
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-2, 1e2),
       method=st.sampled_from(["subspace", "dense"]))
def test_invariant_to_rotation_and_scaling(seed, scale, method):
    h, y, W, b = random_problem(seed, N=60, D=7, C=4)
    R = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(7, 7)))[0]
    base = co.neural_collapse(h, y, W, b, method=method)
    moved = co.neural_collapse(scale * h @ R.T, y, W @ R.T / scale, b, method=method)
    assert set(base) == set(moved)
    for k in base:
        np.testing.assert_allclose(moved[k], base[k], rtol=1e-7, atol=1e-9, err_msg=k)


# --------------------------------------------------------------------- bad input
def test_bad_input():
    h, y, W, b = random_problem(6)
    with pytest.raises(InvalidArgumentError, match="at least 2 classes"):
        co.neural_collapse(h, np.zeros(len(y), int))
    with pytest.raises(ShapeMismatchError, match="labels"):
        co.neural_collapse(h, y[:-1])
    bad = h.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        co.neural_collapse(bad, y)
    with pytest.raises(ShapeMismatchError, match="W must have shape"):
        co.neural_collapse(h, y, W.T)
    with pytest.raises(ShapeMismatchError, match="W must have shape"):
        co.neural_collapse(h, y, W[:, :-1])
    with pytest.raises(ShapeMismatchError, match="bias"):
        co.neural_collapse(h, y, W, b[:-1])
    with pytest.raises(ShapeMismatchError):
        co.neural_collapse(h[0], y)
    with pytest.raises(ShapeMismatchError, match="predictions"):
        co.neural_collapse(h, y, predictions=y[:-2])
    with pytest.raises(InvalidArgumentError, match="integer"):
        co.neural_collapse(h, y.astype(float))
    with pytest.raises(InvalidArgumentError, match="nc2_variant"):
        co.neural_collapse(h, y, nc2_variant="bogus")


def test_stream_detects_a_one_shot_iterator():
    h, y, _, _ = random_problem(7)
    it = iter([(h, y)])
    with pytest.raises(InvalidArgumentError, match="same samples"):
        co.neural_collapse_stream(lambda: it)


# --------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def trained_like():
    model = dk.models.mlp(in_dim=5, widths=[16, 12], out_dim=3, parameterization="ntk", alpha=0.5,
                          b_std=0.3)
    params = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5))
    y = np.arange(90) % 3
    return model, params, x, y


def test_readout_reproduces_logits(trained_like):
    model, params, x, _ = trained_like
    W, b = co.readout(model, params)
    feats = np.asarray(model.features(params, x))
    np.testing.assert_allclose(feats @ W.T + b, np.asarray(model.apply(params, x)), rtol=1e-12)


def test_collapse_of_model_equals_dense(trained_like):
    model, params, x, y = trained_like
    feats = np.asarray(model.features(params, x))
    logits = np.asarray(model.apply(params, x))
    W, b = co.readout(model, params)
    ref = reference(feats, y, W, b)
    res = co.collapse_of_model(model, params, x, y, batch_size=32)
    assert_metrics(res, ref, rtol=1e-9)
    assert res.nc4 == co.neural_collapse(feats, y, predictions=logits).nc4


def test_collapse_by_layer(trained_like):
    model, params, x, y = trained_like
    df = co.collapse_by_layer(model, params, x, y, batch_size=40)
    assert list(df.columns) == ["layer", "metric", "value"]
    assert list(dict.fromkeys(df.layer)) == model.layer_names()
    logits = np.asarray(model.apply(params, x))
    inter = model.intermediates(params, x)
    for layer, acts in inter.items():
        got = df[df.layer == layer].set_index("metric").value
        ref = co.neural_collapse(np.asarray(acts), y, predictions=logits)
        for k in ("nc1", "nc2_etf", "nc4"):
            assert got[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12)
    feat = df[df.layer == model.feature].set_index("metric").value
    assert feat["nc3"] == pytest.approx(co.collapse_of_model(model, params, x, y).nc3, rel=1e-9)


def test_readout_rejects_non_dense_head():
    model = dk.models.mlp(in_dim=3, widths=[4], out_dim=2)
    nodes = model.nodes + (dk.models.Node("post", "relu", (model.output,), {}),)
    broken = type(model)(model.config, nodes, "post", model.feature, model.input_shape)
    with pytest.raises(UnsupportedLayerError):
        co.readout(broken, model.init(jax.random.PRNGKey(0)))


def test_registered_metric(trained_like):
    model, params, x, y = trained_like
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:30], y_test=y[:30], num_classes=3)
    df = METRICS.get("collapse").func(model, params, data)
    assert list(df.columns) == ["metric", "value", "split"]
    assert set(df.split) == {"train", "test"}
    train = df[df.split == "train"].set_index("metric").value
    assert train["nc1"] == pytest.approx(co.collapse_of_model(model, params, x, y).nc1, rel=1e-12)


# --------------------------------------------------------------------- imbalanced
def orthogonal_frame(counts, lam_w, lam_h, D, seed=0):
    pred = ci.ufm_imbalanced_norms(counts, lam_w, lam_h)
    C = len(counts)
    Q = np.linalg.qr(np.random.default_rng(seed).normal(size=(D, C)))[0].T
    y = np.repeat(np.arange(C), counts)
    H = (pred.h_norm.to_numpy()[:, None] * Q)[y]
    W = pred.w_norm.to_numpy()[:, None] * Q
    return H, y, W, pred


def test_constructed_orthogonal_frame_gives_predicted_values():
    counts, lw, lh = np.array([40, 40, 10, 5, 5]), 1e-4, 2e-4
    H, y, W, pred = orthogonal_frame(counts, lw, lh, D=8)
    res = ci.imbalanced_collapse(H, y, W, weight_decay_w=lw, weight_decay_h=lh)
    for k in ("orthogonality", "orthogonality_W", "alignment", "norm_ratio_cv",
              "mean_norm_error", "w_norm_error"):
        assert abs(res[k]) < 1e-12, (k, res[k])
    assert res.minority_collapse == pytest.approx(0.0, abs=1e-12)  # orthogonal rows
    ratio = pred.w_norm / pred.h_norm
    np.testing.assert_allclose(ratio, np.sqrt(counts * lh / lw), rtol=1e-12)
    table = ci.class_norms(H, y, W)
    np.testing.assert_allclose(table.mean_norm, pred.h_norm, rtol=1e-12)
    np.testing.assert_allclose(table.w_norm, pred.w_norm, rtol=1e-12)
    assert list(table["count"]) == list(counts)
    # the balanced-data ETF measure is far from 0 on an orthogonal frame
    assert co.neural_collapse(H, y, W).nc2_etf > 0.1


def test_ufm_prediction_matches_numerical_minimizer():
    counts, lw, lh = np.array([6, 3, 2]), 5e-3, 5e-3
    C, D, N = 3, 4, counts.sum()
    y = np.repeat(np.arange(C), counts)
    Y = np.eye(C)[y].T

    def loss(z):
        W, H = z[:C * D].reshape(C, D), z[C * D:].reshape(D, N)
        R = W @ H - Y
        f = np.sum(R**2) / (2 * N) + lw / 2 * np.sum(W**2) + lh / 2 * np.sum(H**2)
        g = np.concatenate([(R @ H.T / N + lw * W).ravel(), (W.T @ R / N + lh * H).ravel()])
        return f, g

    z0 = np.random.default_rng(0).normal(scale=0.5, size=C * D + D * N)
    opts = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000}
    z = minimize(loss, z0, jac=True, method="L-BFGS-B", options=opts).x
    W, H = z[:C * D].reshape(C, D), z[C * D:].reshape(D, N)
    pred = ci.ufm_imbalanced_norms(counts, lw, lh)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), pred.w_norm, rtol=1e-4)
    res = ci.imbalanced_collapse(H.T, y, W, weight_decay_w=lw, weight_decay_h=lh)
    assert res.orthogonality < 1e-4 and res.norm_ratio_cv < 1e-4 and res.mean_norm_error < 1e-4


def test_minority_collapse_and_thresholds():
    counts = np.array([50, 50, 2, 2, 2])
    rng = np.random.default_rng(0)
    W = rng.normal(size=(5, 6))
    W[2:] = 3.0 * W[2]  # minority rows collapsed onto one direction
    assert ci.minority_collapse(W, counts) == pytest.approx(1.0, abs=1e-12)
    assert ci.orthogonality(simplex_etf(5, 7)) == pytest.approx(1 / 4, rel=1e-12)
    # a class survives iff n_k > N² λ_W λ_H (N = 106)
    alive = ci.ufm_imbalanced_norms(counts, 1e-2, 1e-2)  # threshold 1.12 < 2
    assert np.all(alive.w_norm > 0) and np.all(alive.h_norm > 0)
    dead = ci.ufm_imbalanced_norms(counts, 2e-2, 2e-2)  # threshold 4.49: minorities vanish
    np.testing.assert_array_equal(dead.w_norm.to_numpy()[2:], 0.0)
    assert np.all(dead.w_norm.to_numpy()[:2] > 0)
    with pytest.raises(InvalidArgumentError):
        ci.minority_collapse(W, np.array([5, 5, 5, 5, 1]))
