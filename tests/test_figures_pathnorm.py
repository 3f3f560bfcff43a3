"""``pathnorm-training`` figure (smoke + phenomenon) and its unit-rescaling helper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynkit as dk
from dynkit.analyses.pathnorm import path_norm
from dynkit.analyses.pathnorm_bound import operator_norm_product
from dynkit.errors import InvalidArgumentError
from dynkit.figures import pathnorm_training as fig
from dynkit.models.builder import GraphBuilder


def brute_force_l_q(p, q):
    """Sum over every path of a one-hidden-layer ReLU MLP (``fc0``, ``head``) of
    ``|Phi_p|^q``, enumerated explicitly, to the power ``1/q``."""
    w1, b1, w2, b2 = (np.asarray(p[n][k], np.float64) for n in ("fc0", "head") for k in "wb")
    total = 0.0
    d_in, width = w1.shape
    for k in range(w2.shape[1]):
        total += abs(b2[k]) ** q  # the path that is the output neuron alone
        for j in range(width):
            total += abs(b1[j] * w2[j, k]) ** q
            for i in range(d_in):
                total += abs(w1[i, j] * w2[j, k]) ** q
    return total ** (1 / q)


def _random_mlp():
    model = dk.models.mlp(3, [4], 2)
    params = model.init(jax.random.PRNGKey(1), jnp.float64)
    params["fc0"]["b"] = jax.random.normal(jax.random.PRNGKey(2), (4,))
    params["head"]["b"] = jax.random.normal(jax.random.PRNGKey(3), (2,))
    return model, params


@pytest.mark.parametrize("lam", [0.1, 7.0])
def test_rescale_unit_mlp_keeps_function_and_brute_force_path_norm(lam):
    model, params = _random_mlp()
    scaled = fig.rescale_unit(model, params, "fc0", "head", 2, lam)
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 3))
    np.testing.assert_allclose(model.apply(scaled, x), model.apply(params, x), rtol=1e-12)
    for q in (1.0, 2.0, 4.0):
        ref = brute_force_l_q(params, q)
        assert brute_force_l_q(scaled, q) == pytest.approx(ref, rel=1e-12)
        assert path_norm(model, scaled, q).value == pytest.approx(ref, rel=1e-10)
    # the layers' spectral norms do see the rescaling
    before = operator_norm_product(model, params).value
    assert abs(operator_norm_product(model, scaled).value / before - 1) > 1e-3


def _tiny_resnet():
    """conv-BN-ReLU stem, one residual block (conv-BN-ReLU-conv-BN + identity skip), a
    3x3 max-pool, global average pool and a dense head, on 6x6x1 inputs."""
    g = GraphBuilder((6, 6, 1))
    stem = g.relu(g.batchnorm(g.conv("input", 2, 3, name="c0", bias=False), name="bn0"),
                  name="r0")
    h = g.relu(g.batchnorm(g.conv(stem, 2, 3, name="c1", bias=False), name="bn1"), name="r1")
    h = g.batchnorm(g.conv(h, 2, 3, name="c2", bias=False), name="bn2")
    h = g.relu(g.add_([h, stem], name="add"), name="r2")
    h = g.global_avgpool(g.pool(h, "max", 3, name="pool", stride=1, padding="SAME"))
    model = g.build({"arch": "tiny_block"}, g.dense(h, 3, name="head"), h)
    params = model.init(jax.random.PRNGKey(0), jnp.float64)
    keys = iter(jax.random.split(jax.random.PRNGKey(5), 16))
    for p in params.values():  # non-trivial BatchNorm statistics and affine maps
        if "var" in p:
            n = p["var"].shape
            p.update(scale=jax.random.normal(next(keys), n), bias=jax.random.normal(next(keys), n),
                     mean=jax.random.normal(next(keys), n),
                     var=jax.random.uniform(next(keys), n, minval=0.5, maxval=2.0))
    return model, params


@pytest.mark.slow
def test_rescale_unit_batchnorm_channel_in_a_residual_block():
    model, params = _tiny_resnet()
    scaled = fig.rescale_unit(model, params, "bn1", "c2", 1, 3.0)
    x = jax.random.normal(jax.random.PRNGKey(6), (4, 6, 6, 1))
    np.testing.assert_allclose(model.apply(scaled, x), model.apply(params, x), rtol=1e-10,
                               atol=1e-12)
    for q in (1.0, 2.0, 4.0):
        assert path_norm(model, scaled, q).log_value == pytest.approx(
            path_norm(model, params, q).log_value, rel=1e-12)


def test_rescale_unit_bad_input():
    model, params = _random_mlp()
    with pytest.raises(InvalidArgumentError, match="lam"):
        fig.rescale_unit(model, params, "fc0", "head", 0, 0.0)
    with pytest.raises(InvalidArgumentError, match="single ReLU"):
        fig.rescale_unit(model, params, "head", "fc0", 0, 2.0)
    block, block_params = _tiny_resnet()
    with pytest.raises(InvalidArgumentError, match="single ReLU"):  # r0 also feeds the skip
        fig.rescale_unit(block, block_params, "bn0", "c1", 0, 2.0)


@pytest.mark.slow
def test_pathnorm_training_figure(quick_figure):
    df = quick_figure(fig)
    assert list(df.columns) == fig.COLUMNS
    trained, rescaled = df[df["variant"] == "trained"], df[df["variant"] == "rescaled"]
    final = trained["step"].max()
    for q in fig.QS:
        pn = trained[(trained["quantity"] == "pathnorm") & (trained["q"] == q)]["value"]
        assert len(pn) >= 5 and np.all(np.isfinite(pn))
    # the path-norm grows from init and is rescaling-invariant; the product of operator norms
    # changes under the same rescaling
    result = fig.claim(df)
    assert result.passed, result
    op = trained[trained["quantity"] == "operator_norm_product"].sort_values("step")["value"]
    assert op.iloc[-1] > op.iloc[0]  # and grows in training
    # the rescaled copy computes the same function; the bound is unchanged with it
    assert rescaled[rescaled["quantity"] == "max_logit_change"]["value"].iloc[0] < 1e-3
    for kind in ("bound", "bound_sharpened"):
        b = trained[(trained["quantity"] == kind) & (trained["step"] == final)]
        br = rescaled[rescaled["quantity"] == kind]
        assert float(br["value"].iloc[0]) == pytest.approx(float(b["value"].iloc[0]), rel=1e-9)
