"""Architectures of ``dynkit.models``: shapes, parameter counts, naming, config round trip,
BatchNorm semantics, parameterizations and input validation.

Independent references: closed-form parameter counts, published torchvision / akamaster /
xternalz counts, hand-written numpy convolutions and BatchNorm moments, exact Gaussian
second-moment recursions checked by Monte Carlo.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynkit.models as M
from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.resnet import conv_bn

KEY = jax.random.PRNGKey(0)


def small_models():
    """(model, expected feature dim) for every architecture at a small size."""
    return {
        "cnn_flatten": (M.cnn((16, 16, 3), [4, 8], 5), 4 * 4 * 8),
        "cnn_gap": (M.cnn((16, 16, 3), [4, 8], 5, readout="global_avgpool", pool="avg"), 8),
        "resnet20": (M.resnet20(5, input_shape=(16, 16, 3), width=4), 16),
        "wrn10_2": (M.wrn(10, 2, 5, input_shape=(16, 16, 3)), 128),
        "vgg11_digits": (M.vgg11((8, 8, 1), 5, classifier_width=16), 16),
        "vgg11_bn": (M.vgg11((16, 16, 3), 5, batchnorm=True, classifier_width=16), 16),
        "resnet18": (M.resnet18(5, input_shape=(32, 32, 3)), 512),
    }


MODELS = small_models()


@functools.cache
def params_of(name):
    """Float64 parameters of ``MODELS[name]`` drawn with numpy (``model.init`` compiles one
    sampler per parameter array, slow on a CPU): weights at their init scale, biases and
    BatchNorm affine maps and running statistics away from their trivial values."""
    model = MODELS[name][0]
    rng = np.random.default_rng(3)
    params = {}
    for node, shapes in model.param_shapes().items():
        attrs = model.node(node).attrs
        if "w" in shapes:
            params[node] = {"w": attrs["init_std"] * rng.normal(size=shapes["w"])}
            if "b" in shapes:
                params[node]["b"] = 0.1 * rng.normal(size=shapes["b"])
        else:
            c = shapes["scale"]
            params[node] = {"scale": 1 + 0.1 * rng.normal(size=c), "bias": 0.1 * rng.normal(size=c),
                            "mean": 0.1 * rng.normal(size=c), "var": 1 + rng.uniform(size=c)}
    return jax.tree.map(jnp.asarray, params)


def batch(model, n=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, *model.input_shape)))


# --------------------------------------------------------------------------- shapes
def abstract(model, n=2):
    """Abstract parameters and input batch: shapes are checked by tracing, nothing compiles."""
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), model.param_shapes(),
                          is_leaf=lambda t: isinstance(t, tuple))
    return params, jax.ShapeDtypeStruct((n, *model.input_shape), jnp.float32)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_feature_and_tap_shapes(name):
    model, dim = MODELS[name]
    params, x = abstract(model)
    assert jax.eval_shape(model.apply, params, x).shape == (2, 5)
    assert jax.eval_shape(model.features, params, x).shape == (2, dim)
    taps = jax.eval_shape(model.intermediates, params, x)  # (a traced dict loses its order)
    assert sorted(taps) == sorted(model.layer_names()) and taps
    assert all(v.shape[0] == 2 for v in taps.values())


@pytest.mark.slow
def test_numeric_forward_shapes():
    model, dim = MODELS["vgg11_bn"]
    params, x = params_of("vgg11_bn"), batch(MODELS["vgg11_bn"][0])
    assert model.apply(params, x).shape == (2, 5)
    assert model.features(params, x).shape == (2, dim)
    assert np.isfinite(model.apply(params, x)).all()


def test_resnet50_shape_without_allocating():
    model = M.resnet50(1000)
    params, x = abstract(model)
    x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    assert jax.eval_shape(model.apply, params, x).shape == (2, 1000)
    assert jax.eval_shape(model.features, params, x).shape == (2, 2048)
    assert len(model.layer_names()) == 3 + 4 + 6 + 3


# --------------------------------------------------------------------------- parameter counts
def cifar_resnet_count(depth, width, classes):
    """Closed form: stem conv+BN, 3 stages of n BasicBlocks (two 3x3 convs + 2 BN each), one
    option-B projection (1x1 conv + BN) entering stages 2 and 3, linear read-out."""
    n = (depth - 2) // 6
    total = 27 * width + 2 * width
    c_in = width
    for c in (width, 2 * width, 4 * width):
        total += 9 * c_in * c + 9 * c * c + 4 * c + (c_in * c + 2 * c if c_in != c else 0)
        total += (n - 1) * (18 * c * c + 4 * c)
        c_in = c
    return total + c_in * classes + classes


def wrn_count(depth, k, classes):
    """Closed form for WRN-depth-k: per block BN(in) + 3x3(in->out) + BN(out) + 3x3(out->out)
    [+ 1x1 projection when in != out], final BN and fc."""
    n = (depth - 4) // 6
    total, c_in = 27 * 16, 16
    for c in (16 * k, 32 * k, 64 * k):
        for j in range(n):
            i = c_in if j == 0 else c
            total += 2 * i + 9 * i * c + 2 * c + 9 * c * c + (i * c if i != c else 0)
        c_in = c
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize("depth,width,classes", [(20, 16, 10), (32, 16, 10), (20, 4, 3)])
def test_cifar_resnet_param_count_formula(depth, width, classes):
    assert M.cifar_resnet(depth, classes, width=width).num_params() == cifar_resnet_count(
        depth, width, classes)


def test_resnet20_published_count_plus_projections():
    # akamaster's option-A ResNet-20 has 269,722 parameters; option B adds the projections
    # 16->32 (512 + 64) and 32->64 (2,048 + 128).
    assert M.resnet20().num_params() == 269_722 + 576 + 2_176


@pytest.mark.parametrize("depth,k,classes", [(28, 10, 10), (16, 4, 10), (10, 1, 7)])
def test_wrn_param_count_formula(depth, k, classes):
    assert M.wrn(depth, k, classes).num_params() == wrn_count(depth, k, classes)


def test_wrn_28_10_published_count():
    assert M.wrn(28, 10, 10).num_params() == 36_479_194  # Zagoruyko & Komodakis: 36.5M


@pytest.mark.parametrize("model,count", [
    (lambda: M.resnet18(1000), 11_689_512),  # torchvision.models.resnet18
    (lambda: M.resnet50(1000), 25_557_032),  # torchvision.models.resnet50
    (lambda: M.vgg11((224, 224, 3), 1000, classifier_width=4096), 132_863_336),
    (lambda: M.vgg11((224, 224, 3), 1000, batchnorm=True, classifier_width=4096), 132_868_840),
])
def test_torchvision_param_counts(model, count):
    assert model().num_params() == count


def test_cnn_param_count_and_stat_exclusion():
    model = M.cnn((16, 16, 3), [4, 8], 5)
    assert model.num_params() == (27 * 4 + 4) + (36 * 8 + 8) + (128 * 5 + 5)
    bn = M.vgg11((8, 8, 1), 5, batchnorm=True, classifier_width=16)
    plain = M.vgg11((8, 8, 1), 5, classifier_width=16)
    bn_channels = 64 + 128 + 256 * 2 + 512 * 4
    assert bn.num_params() == plain.num_params() + 2 * bn_channels
    assert bn.num_params(trainable_only=False) == plain.num_params() + 4 * bn_channels


# --------------------------------------------------------------------------- naming contract
def test_resnet_names_follow_torch_modules():
    r18 = {n.name for n in M.resnet18().nodes}
    assert {"conv1", "bn1", "maxpool", "avgpool", "fc", "layer1.1.conv2", "layer4.1.bn2",
            "layer2.0.downsample.0", "layer2.0.downsample.1"} <= r18
    assert "layer1.0.downsample.0" not in r18 and "layer2.1.downsample.0" not in r18
    r50 = {n.name for n in M.resnet50().nodes}
    assert {"layer1.0.downsample.0", "layer1.0.conv3", "layer4.2.bn3"} <= r50
    assert M.resnet50().node("layer2.0.conv2").attrs["stride"] == [2, 2]  # v1.5
    assert M.resnet50().node("layer2.0.conv1").attrs["stride"] == [1, 1]
    c20 = M.resnet20()
    names = {n.name for n in c20.nodes}
    assert {"conv1", "bn1", "layer3.2.bn2", "layer2.0.shortcut.0", "layer3.0.shortcut.1",
            "linear"} <= names
    assert "layer1.0.shortcut.0" not in names and "layer2.1.shortcut.0" not in names
    assert c20.layer_names() == [f"layer{s}.{j}.relu2" for s in (1, 2, 3) for j in range(3)]
    assert all(n.attrs.get("bias") is False for n in c20.nodes if n.op == "conv")


def test_wrn_names_follow_xternalz():
    model = M.wrn(16, 2, 10)
    names = {n.name for n in model.nodes}
    assert {"conv1", "block1.layer.0.bn1", "block1.layer.0.convShortcut", "block3.layer.1.conv2",
            "bn1", "fc"} <= names
    assert "block1.layer.1.convShortcut" not in names
    assert "block1.layer.0.convShortcut" not in {n.name for n in M.wrn(10, 1).nodes}
    assert model.layer_names() == [f"block{g}.layer.{j}.add" for g in (1, 2, 3) for j in (0, 1)]


def test_vgg_indices_follow_torchvision_cfg_a():
    plain = M.vgg11((32, 32, 3), 10)
    convs = [n.name for n in plain.nodes if n.op == "conv"]
    assert convs == [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)]
    assert [n.name for n in plain.nodes if n.op == "maxpool"] == [
        f"features.{i}" for i in (2, 5, 10, 15, 20)]
    bn = M.vgg11((32, 32, 3), 10, batchnorm=True)
    assert [n.name for n in bn.nodes if n.op == "conv"] == [
        f"features.{i}" for i in (0, 4, 8, 11, 15, 18, 22, 25)]
    assert [n.name for n in bn.nodes if n.op == "dense"] == [
        "classifier.0", "classifier.3", "classifier.6"]
    # 8x8 digits: the pools at 15 and 20 would act on a 1x1 map and are left out
    digits = M.vgg11((8, 8, 1), 10)
    assert [n.name for n in digits.nodes if n.op == "maxpool"] == [
        f"features.{i}" for i in (2, 5, 10)]


# --------------------------------------------------------------------------- config round trip
@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_config_round_trip(name):
    model, _ = MODELS[name]
    config = json.loads(json.dumps(model.config))
    rebuilt = M.build(config)
    # equal nodes (attrs hold every init std and multiplier) make init and apply identical
    assert rebuilt.nodes == model.nodes and rebuilt.config == model.config
    assert (rebuilt.output, rebuilt.feature, rebuilt.input_shape) == (
        model.output, model.feature, model.input_shape)


@pytest.mark.parametrize("name", ["resnet20", "vgg11_bn"])
def test_build_config_round_trip_logits(name):
    model, _ = MODELS[name]
    config = json.loads(json.dumps(model.config))
    rebuilt = M.build(config)
    params = params_of(name)
    x = batch(model)
    np.testing.assert_array_equal(rebuilt.apply(params, x), model.apply(params, x))


def test_named_variants_build_and_unknown_arch():
    assert M.build({"arch": "resnet20"}).nodes == M.cifar_resnet(20).nodes
    assert M.build({"arch": "vgg11", "batchnorm": True}).config == M.vgg(11, batchnorm=True).config
    with pytest.raises(InvalidArgumentError, match="unknown architecture"):
        M.build({"arch": "resnet19"})
    with pytest.raises(InvalidArgumentError, match="invalid config"):
        M.build({"arch": "wrn", "widen": 2})


# --------------------------------------------------------------------------- numerics by hand
def conv_numpy(x, w, stride, pad):
    """Cross-correlation as torch computes it: zero padding ``pad`` on each side."""
    x = np.pad(np.asarray(x), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[:2]
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out = out + patch @ np.asarray(w[i, j])
    return out


def test_resnet18_stem_uses_torch_padding_not_same():
    model, _ = MODELS["resnet18"]  # 32x32 input: conv1 -> 16x16, maxpool -> 8x8
    params = params_of("resnet18")
    x = batch(model)
    got = model.intermediates(params, x, ["conv1", "maxpool"])
    conv = conv_numpy(x, params["conv1"]["w"], 2, 3)
    np.testing.assert_allclose(got["conv1"], conv.reshape(2, -1), rtol=1e-12, atol=1e-12)
    bn = params["bn1"]
    h = np.maximum((conv - bn["mean"]) / np.sqrt(bn["var"] + 1e-5) * bn["scale"] + bn["bias"], 0)
    hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = np.max([hp[:, i:i + 15:2, j:j + 15:2] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_allclose(got["maxpool"], pooled.reshape(2, -1), rtol=1e-12, atol=1e-12)


def test_taps_and_features_are_consistent():
    model, _ = MODELS["resnet20"]
    params = params_of("resnet20")
    x = batch(model)
    taps = model.intermediates(params, x)
    assert list(taps) == model.layer_names()
    last = taps["layer3.2.relu2"].reshape(2, 4, 4, 16)
    np.testing.assert_allclose(model.features(params, x), last.mean((1, 2)), rtol=1e-12)
    assert (taps["layer1.0.relu2"] >= 0).all()
    logits = model.features(params, x) @ params["linear"]["w"] + params["linear"]["b"]
    np.testing.assert_allclose(model.apply(params, x), logits, rtol=1e-12)


def test_init_scales():
    """The residual nets' conv + BN unit: He init std sqrt(2 / fan_in), BN scale 1, bias 0."""
    g = M.GraphBuilder((8, 8, 64))
    h = conv_bn(g, "input", 64, 3, 2, "conv", "bn")
    model = g.build({"arch": "toy"}, g.global_avgpool(h), h)
    params = model.init(KEY, jnp.float64)
    w = np.asarray(params["conv"]["w"])  # 3x3x64x64
    assert "b" not in params["conv"]
    assert abs(w.std() / np.sqrt(2 / (9 * 64)) - 1) < 0.02  # 5 standard errors
    assert abs(w.mean()) < 4 * np.sqrt(2 / (9 * 64) / w.size)
    np.testing.assert_array_equal(params["bn"]["scale"], np.ones(64))
    np.testing.assert_array_equal(params["bn"]["bias"], np.zeros(64))


# --------------------------------------------------------------------------- BatchNorm
@pytest.mark.slow
def test_apply_train_updates_running_stats_like_pytorch():
    model, _ = MODELS["resnet20"]
    params = params_of("resnet20")
    x = batch(model, n=3)
    logits, new = model.apply_train(params, x)
    np.testing.assert_array_equal(logits, model.apply(params, x, train=True))
    h = conv_numpy(x, params["conv1"]["w"], 1, 1).reshape(-1, 4)  # 3 * 16 * 16 rows
    m = 0.1
    old = params["bn1"]
    np.testing.assert_allclose(new["bn1"]["mean"], (1 - m) * old["mean"] + m * h.mean(0),
                               rtol=1e-10)
    np.testing.assert_allclose(new["bn1"]["var"], (1 - m) * old["var"] + m * h.var(0, ddof=1),
                               rtol=1e-10)
    np.testing.assert_array_equal(new["conv1"]["w"], params["conv1"]["w"])
    assert set(new) == set(params)


@pytest.mark.slow
def test_train_mode_equals_eval_with_batch_moments():
    """With momentum 1 the running stats are the batch moments (unbiased variance); turning the
    variance back into the biased one makes eval mode reproduce train mode exactly."""
    model, _ = MODELS["wrn10_2"]
    params = params_of("wrn10_2")
    x = batch(model, n=3)
    train_out = model.apply(params, x, train=True)
    assert not np.allclose(train_out, model.apply(params, x))
    _, new = model.apply_train(params, x, momentum=1.0)
    fixed = dict(new)
    shapes = dict(model.intermediates(params, x, [n.inputs[0] for n in model.nodes
                                                    if n.op == "batchnorm"], train=True))
    for n in model.nodes:
        if n.op == "batchnorm":
            count = shapes[n.inputs[0]].shape[1] // n.attrs["num_features"] * 3
            fixed[n.name] = dict(new[n.name], var=new[n.name]["var"] * (count - 1) / count)
    np.testing.assert_allclose(model.apply(fixed, x), train_out, rtol=1e-9, atol=1e-12)


def test_eval_mode_uses_running_stats():
    model, _ = MODELS["vgg11_bn"]
    params = params_of("vgg11_bn")
    x = batch(model)
    stats = {"mean": jnp.full(64, 0.3), "var": jnp.full(64, 4.0)}
    moved = dict(params, **{"features.1": dict(params["features.1"], **stats)})
    conv = conv_numpy(x, params["features.0"]["w"], 1, 1) + params["features.0"]["b"]
    bn = params["features.1"]
    want = np.maximum((conv - 0.3) / np.sqrt(4.0 + 1e-5) * bn["scale"] + bn["bias"], 0)
    got = model.intermediates(moved, x, ["features.2"])["features.2"]
    np.testing.assert_allclose(got, want.reshape(2, -1), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- parameterizations
Q_X = np.random.default_rng(1).normal(size=(1, 16))


def output_second_moment(model, samples=2000):
    """Monte Carlo ``E f(x)^2`` over initializations and its standard error."""
    keys = jax.random.split(jax.random.PRNGKey(7), samples)
    f = jax.jit(jax.vmap(lambda k: model.apply(model.init(k), jnp.asarray(Q_X))[0, 0]))(keys)
    f2 = np.asarray(f) ** 2
    return f2.mean(), f2.std() / np.sqrt(samples)


@pytest.mark.parametrize("width", [8, 64])
def test_ntk_output_variance_is_width_independent(width):
    """ReLU with W_std = sqrt(2), no bias: E|x_l|^2/n_l = E|x_{l-1}|^2/n_{l-1} exactly at any
    width, so E f^2 = W_std^2 q0 with q0 = |x|^2 / d."""
    model = M.mlp(16, [width, width], 1, parameterization="ntk")
    mean, se = output_second_moment(model)
    assert abs(mean - 2 * np.mean(Q_X**2)) < 4 * se


def test_ntk_and_standard_are_the_same_function_at_init():
    x = jnp.asarray(Q_X)
    std = M.mlp(16, [32], 3, b_std=0.1)
    ntk = M.mlp(16, [32], 3, b_std=0.1, parameterization="ntk")
    np.testing.assert_allclose(std.apply(std.init(KEY, jnp.float64), x),
                               ntk.apply(ntk.init(KEY, jnp.float64), x), rtol=1e-12)
    assert ntk.node("head").attrs["w_mult"] == pytest.approx(np.sqrt(2 / 32))
    conv = M.cnn((8, 8, 1), [4], 2, parameterization="ntk").node("conv0").attrs
    assert (conv["init_std"], conv["w_mult"]) == (1.0, pytest.approx(np.sqrt(2 / 9)))


def test_meanfield_readout_is_average_over_neurons():
    """Mean field (Mei, Montanari & Nguyen 2018): f(x) = (W_std / n) sum_i a_i relu(h_i(x)),
    hence E f^2 = W_std^2 q0 / n."""
    for n in (8, 512):
        head = M.mlp(16, [n], 1, parameterization="meanfield").node("head").attrs
        assert head["w_mult"] == pytest.approx(np.sqrt(2) / n) and head["init_std"] == 1.0
    width = 32
    model = M.mlp(16, [width], 1, parameterization="meanfield")
    assert model.node("fc0").attrs["w_mult"] == pytest.approx(np.sqrt(2 / 16))
    x = jnp.asarray(Q_X)

    def both(k):
        p = model.init(k)
        hidden = jax.nn.relu(np.sqrt(2 / 16) * x @ p["fc0"]["w"])
        return model.apply(p, x)[0, 0], (np.sqrt(2) / width * hidden @ p["head"]["w"])[0, 0]

    f, by_hand = jax.jit(jax.vmap(both))(jax.random.split(KEY, 2000))
    np.testing.assert_allclose(f, by_hand, rtol=1e-5, atol=1e-7)  # float32 init
    f2 = np.asarray(f) ** 2
    assert abs(width * f2.mean() - 2 * np.mean(Q_X**2)) < 4 * width * f2.std() / np.sqrt(2000)


def test_mup_effective_scales():
    """muP (Yang & Hu 2021): effective weight variances W^2/d (input), W^2/n (hidden),
    W^2/n^2 (read-out), hence E f^2 = W^2 q0 / n."""
    for width in (8, 512):
        model = M.mlp(16, [width, width], 1, parameterization="mup")
        eff = {k: (model.node(k).attrs["init_std"] * model.node(k).attrs["w_mult"]) ** 2
               for k in ("fc0", "fc1", "head")}
        assert eff == pytest.approx({"fc0": 2 / 16, "fc1": 2 / width, "head": 2 / width**2})
    mean, se = output_second_moment(M.mlp(16, [32, 32], 1, parameterization="mup"))
    assert abs(32 * mean - 2 * np.mean(Q_X**2)) < 4 * 32 * se


def test_unknown_parameterization():
    with pytest.raises(InvalidArgumentError, match="parameterization"):
        M.cnn((8, 8, 1), [4], 2, parameterization="muP")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", ["cnn_flatten", "resnet20", "vgg11_digits"])
def test_bad_input_shape_raises(name):
    model, _ = MODELS[name]
    params = None  # the input is validated before any parameter is touched
    wrong = jnp.zeros((2, 9, 9, model.input_shape[-1]))
    for call in (model.apply, model.features, model.intermediates):
        with pytest.raises(ShapeMismatchError, match="expects inputs of shape"):
            call(params, wrong)
    with pytest.raises(ShapeMismatchError):
        model.apply(params, jnp.zeros(model.input_shape))  # batch axis missing


def test_bad_builder_arguments():
    with pytest.raises(ShapeMismatchError, match="height, width, channels"):
        M.resnet20(input_shape=(32, 32))
    with pytest.raises(ShapeMismatchError, match="too small"):
        M.cnn((4, 4, 1), [2, 2, 2], 3)
    with pytest.raises(InvalidArgumentError, match="6n \\+ 2"):
        M.cifar_resnet(21)
    with pytest.raises(InvalidArgumentError, match="6n \\+ 4"):
        M.wrn(27, 2)
    with pytest.raises(InvalidArgumentError, match="depth"):
        M.resnet(20)
    with pytest.raises(InvalidArgumentError, match="readout"):
        M.cnn((8, 8, 1), [4], 2, readout="mean")
