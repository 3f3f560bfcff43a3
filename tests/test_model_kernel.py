"""``dynkit.theory.kernel_of(model)``: the infinite-width kernel of a dynkit graph Model.

Checks: it equals the hand-built ``stax`` network of the same architecture (an MLP in two
parameterizations, a small CNN with average pooling, a fully connected DenseNet graph);
the mean empirical NTK of random finite models approaches it (seed-mean CLT band plus an
O(1/width) finite-width bias, the style of tests/test_empirical.py); BatchNorm and MaxPool
models are refused with the node named.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynkit as dk
from dynkit.errors import UnsupportedLayerError
from dynkit.models.builder import GraphBuilder
from dynkit.theory import (
    empirical,
    kernel_of,  # dk.theory.kernel_of
    stax,
)

X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))


def _dense_concat_model(width, parameterization="ntk"):
    """input -> fc0 -> [relu -> fc1 || identity] -> concat -> relu -> head (issue 14's net)."""
    g = GraphBuilder((4,), parameterization)
    h = g.dense("input", width, name="fc0", W_std=1.2, b_std=0.1)
    r = g.relu(h, name="act0")
    b = g.dense(r, width // 2, name="fc1", W_std=3.0, b_std=2.0)
    c = g.concat([b, h], name="cat")
    a = g.relu(c, name="act1", tap=True)
    out = g.dense(a, 1, name="head", W_std=1.0, b_std=0.1, role="readout")
    return g.build({"arch": "dense_concat_test"}, out, a)


def _stax_dense_concat(width):
    return stax.serial(
        stax.Dense(width, W_std=1.2, b_std=0.1), stax.FanOut(2),
        stax.parallel(stax.serial(stax.Relu(), stax.Dense(width // 2, W_std=3.0, b_std=2.0)),
                      stax.Identity()),
        stax.FanInConcat(), stax.Relu(), stax.Dense(1, W_std=1.0, b_std=0.1))


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_mlp_equals_stax(parameterization):
    model = dk.models.mlp(4, [16, 16], 1, parameterization=parameterization, W_std=1.5,
                          b_std=0.2)
    net = stax.serial(*[stax.Dense(16, W_std=1.5, b_std=0.2, parameterization=parameterization),
                        stax.Relu()] * 2,
                      stax.Dense(1, W_std=1.5, b_std=0.2, parameterization=parameterization))
    got, want = kernel_of(model)(X, None, None), net[2](X, None, None)
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
    if parameterization == "ntk":  # stax's standard NTK counts the readout fan_in differently
        np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)


@pytest.mark.slow
def test_concat_graph_and_cnn_equal_stax():
    got = kernel_of(_dense_concat_model(8))(X, None, ("nngp", "ntk"))
    want = _stax_dense_concat(8)[2](X, None, ("nngp", "ntk"))
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)
    model = dk.models.cnn((4, 4, 1), (3,), 1, pool="avg", readout="global_avgpool", parameterization="ntk",
                          b_std=0.1)
    img = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 1)))
    net = stax.serial(stax.Conv(3, (3, 3), padding="SAME", W_std=2 ** 0.5, b_std=0.1),
                      stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2)), stax.GlobalAvgPool(),
                      stax.Dense(1, W_std=1.0, b_std=0.1))
    np.testing.assert_allclose(kernel_of(model)(img, None, "ntk"), net[2](img, None, "ntk"),
                               rtol=1e-10)


@pytest.mark.slow
def test_empirical_ntk_converges():
    """Seed mean of the empirical NTK of the concat Model -> kernel_of(model), at widths
    256 and 1024 (|mean - Θ| <= 4 se + 2 |Θ| / width)."""
    theta = np.asarray(kernel_of(_dense_concat_model(8))(X, None, "ntk"))
    seeds = 24
    for w in (256, 1024):
        model = _dense_concat_model(w)
        fn = empirical.ntk_fn(model, "jacobian")
        keys = jax.random.split(jax.random.PRNGKey(w), seeds)
        ks = np.asarray(jax.jit(jax.vmap(lambda k, m=model, f=fn: f(X, None, m.init(k, jnp.float64))))(keys))
        mean, se = ks.mean(0), ks.std(0, ddof=1) / math.sqrt(seeds)
        assert np.all(np.abs(mean - theta) <= 4 * se + 2 * np.abs(theta) / w), (w, mean, theta)


def test_unsupported_nodes_are_named():
    with pytest.raises(UnsupportedLayerError, match=r"'bn1'.*batchnorm"):
        kernel_of(dk.models.cifar_resnet(20, input_shape=(8, 8, 3), width=4))
    with pytest.raises(UnsupportedLayerError, match=r"maxpool"):
        kernel_of(dk.models.cnn((8, 8, 1), (2,), 1, pool="max"))


def test_residual_graph_with_scale_equals_stax_resnet():
    """add + scale nodes: x + (1/sqrt(L)) Dense(relu(x)) equals stax_resnet's folded branch."""
    depth, width = 3, 8
    g = GraphBuilder((4,), "ntk")
    h = g.dense("input", width, name="stem", W_std=1.3, b_std=0.2)
    for i in range(depth):
        r = g.relu(h, name=f"b{i}.relu")
        d = g.dense(r, width, name=f"b{i}.fc", W_std=1.3, b_std=0.2)
        s = g.scale(d, 1 / math.sqrt(depth), name=f"b{i}.scale")
        h = g.add_([h, s], name=f"b{i}.add")
    a = g.relu(h, name="act", tap=True)
    out = g.dense(a, 1, name="head", W_std=1.3, b_std=0.2, role="readout")
    model = g.build({"arch": "residual_test"}, out, a)
    got = kernel_of(model)(X, None, ("nngp", "ntk"))
    want = stax.stax_resnet(depth, width, W_std=1.3, b_std=0.2)[2](X, None, ("nngp", "ntk"))
    np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
    np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)
