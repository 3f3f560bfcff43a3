"""Mode connectivity: permutation recovery, function preservation, barriers, stability."""

import jax
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

import dynkit as dk
from dynkit.analyses import lmc
from dynkit.analyses.lmc_stability import drop_units, dropout_path, dropout_stability, instability
from dynkit.analyses.permutation import permutation_spec
from dynkit.errors import InvalidArgumentError, ShapeMismatchError


def _random_bn_stats(model, params, seed):
    """Give BatchNorm layers non-trivial statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    out = {k: dict(v) for k, v in params.items()}
    for node in model.nodes:
        if node.op == "batchnorm":
            c = node.attrs["num_features"]
            out[node.name] = {"scale": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c),
                              "mean": rng.normal(0, 0.1, c), "var": rng.uniform(0.5, 1.5, c)}
    return out


MODELS = {
    "mlp": lambda: dk.models.mlp(10, [24, 16], 4),
    "cnn": lambda: dk.models.cnn((8, 8, 2), channels=(6, 8), num_classes=4),
    "resnet20": lambda: dk.models.build({"arch": "resnet20", "input_shape": [8, 8, 3],
                                         "num_classes": 4, "width": 4}),
}


@pytest.fixture(params=sorted(MODELS))
def model_and_params(request):
    model = MODELS[request.param]()
    params = _random_bn_stats(model, model.init(jax.random.PRNGKey(0), dtype=np.float64), 1)
    return model, params


@pytest.mark.slow
def test_apply_permutation_preserves_function(model_and_params):
    model, params = model_and_params
    spec = permutation_spec(model)
    rng = np.random.default_rng(0)
    perm = {g: rng.permutation(n) for g, n in spec.sizes.items()}
    permuted = lmc.apply_permutation(model, params, perm)
    x = rng.normal(size=(5, *model.input_shape))
    np.testing.assert_allclose(model.apply(permuted, x), model.apply(params, x), atol=1e-6)
    assert any(not np.allclose(permuted[n]["w"], params[n]["w"])
               for n in params if "w" in params[n])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["weights", "activations:repair", "activations:rebasin",
                                    "activations:pearson_all_nodes"])
def test_matching_recovers_random_permutation(model_and_params, method):
    model, params = model_and_params
    spec = permutation_spec(model)
    rng = np.random.default_rng(3)
    perm = {g: rng.permutation(n) for g, n in spec.sizes.items()}
    params_b = lmc.apply_permutation(model, params, perm)
    if method == "weights":
        found = lmc.weight_matching(model, params, params_b)
    else:
        x = rng.normal(size=(64, *model.input_shape))
        found = lmc.activation_matching(model, params, params_b, x,
                                        objective=method.split(":")[1])
    aligned = lmc.apply_permutation(model, params_b, found)
    for node, p in params.items():
        for k, v in p.items():
            np.testing.assert_array_equal(aligned[node][k], np.asarray(v))
    x = rng.normal(size=(16, *model.input_shape))
    y = rng.integers(0, 4, size=16)
    curve = lmc.interpolate(model, params, aligned, x, y, alphas=5, bn="interpolate")
    assert lmc.barrier(curve) == pytest.approx(0.0, abs=1e-12)


def test_residual_stream_is_one_group():
    model = MODELS["resnet20"]()
    spec = permutation_spec(model)
    members = [set(m) for m in spec.members.values()]
    # the stream of each stage ties the stem (or the projection) with every block's conv2/bn2
    stage1 = next(m for m in members if "conv1" in m)
    assert {"layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= stage1
    assert "linear" not in {a.node for axes in spec.groups.values() for a in axes if a.axis == -1}


def test_barrier_definitions_on_a_known_curve():
    a = np.linspace(0, 1, 5)
    loss = np.array([1.0, 2.0, 3.0, 2.5, 2.0])
    curve = pd.DataFrame({"alpha": a, "split": "train", "loss": loss, "error": loss / 10})
    # linear: max of loss - (1 + a): [0, 0.75, 1.5, 0.75, 0] -> 1.5 ; mean: 3 - 1.5
    assert lmc.barrier(curve, definition="linear") == pytest.approx(1.5)
    assert lmc.barrier(curve, definition="mean") == pytest.approx(1.5)
    assert lmc.barrier(curve, definition="linear", metric="error") == pytest.approx(0.15)
    with pytest.raises(InvalidArgumentError):
        lmc.barrier(curve, definition="nope")


def _digits_subset():
    data = dk.data.load("digits", seed=0)
    return data


@pytest.mark.slow
def test_same_init_same_order_gives_zero_barrier():
    from dynkit.train import fit

    data = _digits_subset()
    model = dk.models.mlp(64, [32], 10)
    runs = [fit(model, data, lr=0.1, steps=30, seed=0, progress=False).params for _ in range(2)]
    curve = lmc.interpolate(model, *runs, data.x_train, data.y_train, alphas=5)
    assert lmc.barrier(curve) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_alignment_reduces_barrier_of_independent_wide_mlps():
    from dynkit.train import fit

    data = _digits_subset()
    model = dk.models.mlp(64, [256, 256], 10)
    pa, pb = (fit(model, data, optimizer="momentum", lr=0.05, epochs=8, seed=s,
                  progress=False).params for s in (0, 1))
    naive = lmc.barrier(lmc.interpolate(model, pa, pb, data.x_train, data.y_train, alphas=11))
    pb_aligned = lmc.apply_permutation(model, pb, lmc.weight_matching(model, pa, pb))
    aligned = lmc.barrier(lmc.interpolate(model, pa, pb_aligned, data.x_train, data.y_train,
                                          alphas=11))
    assert naive > 0.05
    assert aligned < 0.5 * naive


@pytest.mark.slow
def test_reset_bn_recovers_statistics():
    model = MODELS["resnet20"]()
    params = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(32, *model.input_shape))
    reset = lmc.reset_batchnorm(model, params, x)
    # after the reset, eval mode on the same data equals train mode (batch statistics)
    # up to the unbiased/biased variance factor n/(n-1) of each layer's sample count
    out_eval = model.apply(reset, x)
    out_train = model.apply(params, x, train=True)
    assert np.corrcoef(np.ravel(out_eval), np.ravel(out_train))[0, 1] > 0.999


@pytest.mark.slow
def test_layerwise_table_and_errors():
    model = MODELS["mlp"]()
    rng = np.random.default_rng(0)
    pa = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    pb = model.init(jax.random.PRNGKey(1), dtype=np.float64)
    x, y = rng.normal(size=(20, 10)), rng.integers(0, 4, 20)
    table = lmc.layerwise_interpolate(model, pa, pb, x, y, alphas=3)
    assert set(table["layer"]) == {"fc0", "fc1", "head"}
    # at alpha=0 every layer's curve is network A
    at0 = table[table["alpha"] == 0.0]["loss"].to_numpy()
    np.testing.assert_allclose(at0, at0[0])
    with pytest.raises(InvalidArgumentError):
        lmc.interpolate(model, pa, pb, x, y, alphas=[])
    with pytest.raises(ShapeMismatchError):
        lmc.interpolate(model, pa, MODELS["mlp"]().init(jax.random.PRNGKey(0)) | {
            "fc0": {"w": np.zeros((3, 3)), "b": np.zeros(3)}}, x, y)
    with pytest.raises(ShapeMismatchError):
        lmc.weight_matching(model, pa, MODELS["cnn"]().init(jax.random.PRNGKey(0)))


@pytest.mark.slow
def test_dropout_keep_all_is_identity_and_path_is_bounded():
    from dynkit.train import fit

    data = _digits_subset()
    model = dk.models.mlp(64, [128], 10)
    pa, pb = (fit(model, data, lr=0.1, epochs=5, seed=s, progress=False).params for s in (0, 1))
    kept = drop_units(model, pa, "act0", np.arange(128))
    x = data.x_train[:50]
    np.testing.assert_allclose(model.apply(kept, x), model.apply(pa, x), rtol=1e-6, atol=1e-6)
    table = dropout_stability(model, pa, data.x_train, data.y_train, "act0", [32, 128], draws=3)
    assert table.set_index("k").loc[128, "delta_loss"] == pytest.approx(0.0, abs=1e-6)
    assert table.set_index("k").loc[32, "delta_loss"] > 0
    path = dropout_path(model, pa, pb, data.x_train, data.y_train, points=5)
    for seg in (1, 3, 5):  # convex in the read-out weights: never above the endpoints
        s = path[path["segment"] == seg].sort_values("t")["loss"].to_numpy()
        assert s.max() <= max(s[0], s[-1]) + 1e-9
    swaps = path[path["segment"].isin([2, 4])]["loss"].to_numpy()
    seg3 = path[path["segment"] == 3].sort_values("t")["loss"].to_numpy()
    np.testing.assert_allclose(swaps, [seg3[0], seg3[-1]], rtol=1e-6)


@pytest.mark.slow
def test_instability_at_end_is_zero():
    data = dk.data.load("gaussian_mixture", seed=0)
    model = dk.models.mlp(data.input_shape[0], [16], data.num_classes)
    table = instability(model, data, spawn_steps=[0, 20], total_steps=20, lr=0.1, alphas=3)
    assert set(table["k"]) == {0, 20}
    at_end = table[table["k"] == 20]
    np.testing.assert_allclose(at_end["barrier_loss"], 0.0, atol=1e-9)


def test_repair_matches_interpolated_channel_statistics():
    """After REPAIR, every hidden pre-activation channel of θ(α) has the mean and std that
    interpolate the endpoints' (Jordan et al. 2023), measured directly on the data."""
    model = dk.models.mlp(10, [24, 16], 4)
    rng = np.random.default_rng(0)
    pa = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    pb = model.init(jax.random.PRNGKey(1), dtype=np.float64)
    x = rng.normal(size=(256, 10))
    alpha = 0.4
    repaired = lmc.repair(model, pa, pb, lmc.lerp(pa, pb, alpha), alpha, x)

    def stats(p, name):
        z = np.asarray(model.intermediates(p, x, [name])[name])
        return z.mean(0), z.std(0)

    for name in ("fc0", "fc1"):
        (ma, sa), (mb, sb), (mr, sr) = stats(pa, name), stats(pb, name), stats(repaired, name)
        np.testing.assert_allclose(mr, (1 - alpha) * ma + alpha * mb, atol=1e-10)
        np.testing.assert_allclose(sr, (1 - alpha) * sa + alpha * sb, rtol=1e-10)


def _numpy_mlp_activations(model, params, x):
    """Pre- and post-ReLU values of each hidden layer of a plain MLP, computed in numpy."""
    out, h = {}, x
    for node in model.nodes:
        if node.op == "dense":
            assert node.attrs["w_mult"] == 1.0 and node.attrs["b_mult"] == 1.0
            h = h @ np.asarray(params[node.name]["w"]) + np.asarray(params[node.name]["b"])
            out[node.name] = h
        elif node.op == "relu":
            h = np.maximum(h, 0.0)
            out[node.name] = h
    return out


@pytest.mark.slow
def test_activation_similarity_equals_numpy_definitions():
    """Each objective's matrix against its definition written out in numpy: Git Re-Basin's
    E[a bᵀ] and REPAIR's Pearson correlation of post-ReLU values, and the Pearson correlation
    summed over pre- and post-activation nodes; moments streamed over uneven batches."""
    model = dk.models.mlp(5, [6, 4], 3)
    pa = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    pb = model.init(jax.random.PRNGKey(1), dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(203, 5))
    za, zb = _numpy_mlp_activations(model, pa, x), _numpy_mlp_activations(model, pb, x)

    def pearson(a, b):
        return np.corrcoef(a, b, rowvar=False)[: a.shape[1], a.shape[1]:]

    def pearson_eps(a, b, eps=1e-12):  # population covariance over (σ + eps)(σ + eps)
        cov = (a - a.mean(0)).T @ (b - b.mean(0)) / len(a)
        return cov / np.outer(a.std(0) + eps, b.std(0) + eps)

    layers = (("fc0", "act0"), ("fc1", "act1"))
    expected = {
        "rebasin": {g: za[r].T @ zb[r] / len(x) for g, r in layers},
        "repair": {g: pearson(za[r], zb[r]) for g, r in layers},
        "pearson_all_nodes": {g: pearson_eps(za[g], zb[g]) + pearson_eps(za[r], zb[r])
                              for g, r in layers},
    }
    for objective, want in expected.items():
        got = lmc.activation_similarity(model, pa, pb, x, objective=objective, batch_size=37)
        assert set(got) == set(want)
        for g in want:
            assert np.all(np.isfinite(want[g]))
            np.testing.assert_allclose(got[g], want[g], rtol=1e-9, atol=1e-12)
            assert np.array_equal(
                lmc.activation_matching(model, pa, pb, x, objective=objective).perms[g],
                linear_sum_assignment(want[g], maximize=True)[1])
    # a dead unit of A (post-ReLU identically 0) scores 0 with every unit of B
    dead = {k: dict(v) for k, v in pa.items()}
    dead["fc0"]["b"] = np.asarray(pa["fc0"]["b"]).copy()
    dead["fc0"]["b"][2] = -1e3
    for objective in ("rebasin", "repair"):
        got = lmc.activation_similarity(model, dead, pb, x, objective=objective)["fc0"]
        np.testing.assert_array_equal(got[2], 0.0)
    with pytest.raises(InvalidArgumentError, match="objective"):
        lmc.activation_similarity(model, pa, pb, x, objective="cosine")


def test_permutation_spec_is_computed_once_per_model():
    model = MODELS["resnet20"]()
    permutation_spec.cache_clear()  # other tests may have cached this graph already
    spec = permutation_spec(model)
    assert permutation_spec(model) is spec
    info = permutation_spec.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # equal models share one spec: a Model compares by its graph
    twin = MODELS["resnet20"]()
    assert twin == model and twin is not model
    assert permutation_spec(twin) is spec
    with pytest.raises(TypeError):  # the shared spec cannot be changed by a caller
        spec.sizes["conv1"] = 0


@pytest.mark.parametrize("name", ["mlp", "resnet20"])
@pytest.mark.slow
def test_repair_corrects_the_readout_when_asked(name):
    """With ``correct_readout=True`` the read-out layer's output channels (the logits) of the
    repaired θ(α) have the interpolated mean and std too, measured directly on the data, as
    in the MLP notebook of Jordan et al. 2023; without it they do not."""
    model = MODELS[name]()
    rng = np.random.default_rng(0)
    pa, pb = (_random_bn_stats(model, model.init(jax.random.PRNGKey(s), dtype=np.float64), s)
              for s in (0, 1))
    x = rng.normal(size=(128, *model.input_shape))
    alpha, head = 0.3, lmc._readout(model)

    def stats(p):
        z = np.asarray(model.intermediates(p, x, [head])[head])
        return z.mean(0), z.std(0)

    (ma, sa), (mb, sb) = stats(pa), stats(pb)
    target = (1 - alpha) * ma + alpha * mb, (1 - alpha) * sa + alpha * sb
    plain = lmc.repair(model, pa, pb, lmc.lerp(pa, pb, alpha), alpha, x)
    fixed = lmc.repair(model, pa, pb, lmc.lerp(pa, pb, alpha), alpha, x, correct_readout=True)
    mr, sr = stats(fixed)
    np.testing.assert_allclose(mr, target[0], atol=1e-10)
    np.testing.assert_allclose(sr, target[1], rtol=1e-10)
    assert not np.allclose(stats(plain)[1], target[1], rtol=1e-3)
    # hidden layers are corrected exactly as without the flag
    for node in (n for n in plain if n != head):
        for k in plain[node]:
            np.testing.assert_array_equal(np.asarray(fixed[node][k]), np.asarray(plain[node][k]))


def test_barrier_table_equals_barrier_of_each_curve():
    rng = np.random.default_rng(0)
    a = np.linspace(0, 1, 6)
    frames = [pd.DataFrame({"alpha": a, "split": split, "loss": rng.uniform(0, 2, 6),
                            "error": rng.uniform(0, 1, 6), "alignment": alignment})
              for alignment in ("none", "weights") for split in ("train", "test")]
    curve = pd.concat(frames, ignore_index=True).sample(frac=1, random_state=0)
    curve = curve.sort_values("alignment", kind="stable")  # alignments in order, rows shuffled
    for definition in lmc.BARRIERS:
        table = lmc.barrier_table(curve, definition=definition, by="alignment")
        assert list(table.columns) == ["alignment", "split", "loss_barrier", "error_barrier"]
        assert list(zip(table["alignment"], table["split"])) == [
            (al, s) for al in ("none", "weights")
            for s in dict.fromkeys(curve[curve["alignment"] == al]["split"])]
        for row in table.itertuples():
            c = curve[curve["alignment"] == row.alignment]
            assert row.loss_barrier == lmc.barrier(c, split=row.split, definition=definition)
            assert row.error_barrier == lmc.barrier(c, split=row.split, metric="error",
                                                    definition=definition)
    one = lmc.barrier_table(curve[curve["alignment"] == "none"])
    assert list(one.columns) == ["split", "loss_barrier", "error_barrier"] and len(one) == 2
    with pytest.raises(InvalidArgumentError, match="seed"):
        lmc.barrier_table(curve, by=["seed"])
