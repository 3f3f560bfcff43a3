"""Permutation alignment through channel concatenation: DenseNet blocks and U-Net long skips."""

import jax
import numpy as np
import pytest

import dynkit as dk
from dynkit.analyses import lmc
from dynkit.analyses.permutation import Axis, apply_permutation, permutation_spec
from dynkit.errors import InvalidArgumentError, UnsupportedLayerError
from dynkit.models import Node
from dynkit.models.graph import Model

MODELS = {
    "densenet": lambda: dk.models.densenet((2, 1), 3, growth_rate=3, num_init_features=4,
                                           stem="cifar", input_shape=(4, 4, 2)),
    "densenet_nonbc": lambda: dk.models.densenet((2,), 3, growth_rate=3, num_init_features=4,
                                                 bn_size=None, stem="cifar",
                                                 input_shape=(4, 4, 2)),
    "unet_transpose": lambda: dk.models.unet(2, 3, 2, input_shape=(4, 4, 2),
                                             skip_scale=0.7, skip_scale_mode="power"),
    "unet_bilinear": lambda: dk.models.unet(1, 3, 1, input_shape=(4, 4, 1),
                                            upsampling="bilinear"),
}


def random_params(model, seed):
    """float64 params with random BatchNorm statistics and affine parameters."""
    params = model.init(jax.random.PRNGKey(seed), dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = {n: {k: np.asarray(v) for k, v in p.items()} for n, p in params.items()}
    for node in model.nodes:
        if node.op == "batchnorm":
            c = node.attrs["num_features"]
            out[node.name] = {"scale": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c),
                              "mean": rng.normal(0, 0.1, c), "var": rng.uniform(0.5, 1.5, c)}
    return out


def test_concat_segments_are_blockwise():
    """The DenseNet layer-2 input ``cat = [conv0 (4 ch), layer1.conv2 (3 ch)]``: its BatchNorm
    and the 1x1 conv reading it are permuted in two segments at offsets 0 and 4 of 7."""
    spec = permutation_spec(MODELS["densenet"]())
    p = "features.denseblock1.denselayer2"
    assert Axis(f"{p}.conv1", "w", -2, 1, 0, 7) in spec.groups["features.conv0"]
    grow = "features.denseblock1.denselayer1.conv2"
    assert Axis(f"{p}.conv1", "w", -2, 1, 4, 7) in spec.groups[grow]
    assert Axis(f"{p}.norm1", "scale", 0, 1, 4, 7) in spec.groups[grow]
    # the concatenation is a member of no group (it carries several)
    assert not any(f"{p[:-1]}1.cat" in m for m in spec.members.values())


def test_unet_long_skip_ties_encoder_to_decoder_input():
    model = MODELS["unet_transpose"]()
    spec = permutation_spec(model)
    # dec1.cat = [dec1.up (3 ch), scaled enc1.relu2 (3 ch)] feeds dec1.conv1
    assert Axis("dec1.conv1", "w", -2, 1, 3, 6) in spec.groups["enc1.conv2"]
    assert Axis("dec1.conv1", "w", -2, 1, 0, 6) in spec.groups["dec1.up"]
    assert "head" not in spec.groups  # the output channels are not permutable


def test_apply_permutation_matches_a_hand_permuted_concat_consumer():
    """Independent numpy check of the block-diagonal permutation of a consumer's input axis."""
    model = MODELS["unet_transpose"]()
    params = random_params(model, 0)
    spec = permutation_spec(model)
    rng = np.random.default_rng(0)
    perm = {g: rng.permutation(n) for g, n in spec.sizes.items()}
    out = apply_permutation(model, params, perm)
    block = np.concatenate([perm["dec1.up"], 3 + perm["enc1.conv2"]])
    w = np.asarray(params["dec1.conv1"]["w"])[:, :, block][..., perm["dec1.conv1"]]
    np.testing.assert_array_equal(out["dec1.conv1"]["w"], w)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.slow
def test_random_permutation_preserves_function_and_is_undone(name):
    model = MODELS[name]()
    params = random_params(model, 1)
    spec = permutation_spec(model)
    rng = np.random.default_rng(2)
    perm = {g: rng.permutation(n) for g, n in spec.sizes.items()}
    permuted = apply_permutation(model, params, perm)
    x = rng.normal(size=(6, *model.input_shape))
    np.testing.assert_allclose(model.apply(permuted, x), model.apply(params, x), rtol=1e-10,
                               atol=1e-12)
    assert any(not np.array_equal(permuted[n]["w"], params[n]["w"])
               for n in params if "w" in params[n])
    found = lmc.weight_matching(model, params, permuted)
    aligned = apply_permutation(model, permuted, found)
    for node, p in params.items():
        for k, v in p.items():
            np.testing.assert_array_equal(aligned[node][k], np.asarray(v))
    if name.startswith("densenet"):
        y, loss = rng.integers(0, 3, size=6), "cross_entropy"
    else:
        y, loss = rng.normal(size=(6, *model.node_shapes()[model.output])), "mse"
    curve = lmc.interpolate(model, params, aligned, x, y, alphas=3, loss=loss, bn="interpolate")
    assert lmc.barrier(curve) == pytest.approx(0.0, abs=1e-12)


def test_concat_of_flattened_tensors_is_refused():
    lin = {"in_ch": 1, "out_ch": 2, "kernel": [1, 1], "bias": True, "init_std": 1.0,
           "w_mult": 1.0, "b_mult": 1.0}
    nodes = (Node("input", "input"),
             Node("c1", "conv", ("input",), dict(lin)), Node("c2", "conv", ("input",), dict(lin)),
             Node("f1", "flatten", ("c1",)), Node("f2", "flatten", ("c2",)),
             Node("cat", "concat", ("f1", "f2")),
             Node("head", "dense", ("cat",), {"in_dim": 16, "out_dim": 2, "init_std": 1.0,
                                                  "w_mult": 1.0, "b_mult": 1.0}))
    model = Model({"arch": "custom"}, nodes, "head", "cat", (2, 2, 1))
    with pytest.raises(UnsupportedLayerError, match="'cat'.*flattened"):
        permutation_spec(model)


def test_drop_units_scales_only_the_segment_of_a_concat_consumer():
    """Dropout stability on a DenseNet layer: its 3 new channels sit at 4..6 of the next
    layer's 7 input channels; keeping unit 0 scales row 4 by 3 and zeroes rows 5, 6."""
    from dynkit.analyses.lmc_stability import drop_units

    model = MODELS["densenet"]()
    params = random_params(model, 4)
    out = drop_units(model, params, "features.denseblock1.denselayer1.conv2", np.array([0]))
    w0 = np.asarray(params["features.denseblock1.denselayer2.conv1"]["w"])
    want = w0 * np.array([1, 1, 1, 1, 3, 0, 0])[:, None]
    np.testing.assert_array_equal(out["features.denseblock1.denselayer2.conv1"]["w"], want)


@pytest.mark.parametrize("name", ["densenet", "unet_transpose"])
@pytest.mark.slow
def test_activation_matching_through_concat(name):
    """Groups read only through a concatenation (a DenseNet layer's new channels, a U-Net
    up-sampling) have no post-activation member: ``repair`` says so; ``pearson_all_nodes``
    matches on the pre-activation members and recovers the permutation exactly."""
    model = MODELS[name]()
    params = random_params(model, 1)
    spec = permutation_spec(model)
    rng = np.random.default_rng(5)
    permuted = apply_permutation(model, params, {g: rng.permutation(n)
                                                 for g, n in spec.sizes.items()})
    x = rng.normal(size=(64, *model.input_shape))
    with pytest.raises(InvalidArgumentError, match="no post-activation node"):
        lmc.activation_matching(model, params, permuted, x)
    found = lmc.activation_matching(model, params, permuted, x, objective="pearson_all_nodes")
    aligned = apply_permutation(model, permuted, found)
    for node, p in params.items():
        for k, v in p.items():
            np.testing.assert_array_equal(aligned[node][k], np.asarray(v))
