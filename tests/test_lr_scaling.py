"""Per-layer learning rates of μP / Depth-μP (dynkit.models.lr_scaling) and their use in fit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynkit as dk
from dynkit.errors import InvalidArgumentError
from dynkit.models import lr_multipliers, mlp, residual_mlp
from dynkit.train import fit

WIDTHS = (64, 128, 256, 1024)


def tp5_table(role, fan_in, fan_out, family, param):
    """Tensor Programs V, Table 3 (μP with unit multipliers): the rate of the effective
    weight/bias, up to a width-independent constant."""
    if param == "b":
        return fan_out if family == "sgd" else 1.0
    if family == "sgd":
        return {"input": fan_out, "hidden": 1.0, "readout": 1.0 / fan_in}[role]
    return {"input": 1.0, "hidden": 1.0 / fan_in, "readout": 1.0 / fan_in}[role]


@pytest.mark.parametrize("family", ["sgd", "adam"])
def test_mup_multipliers_follow_tp5_table(family):
    """Effective rate of W = m·w: SGD m²·η_w, Adam m·η_w. Its ratio to the table's entry must
    not depend on width (each layer, weights and biases)."""
    ratios = {}
    for n in WIDTHS:
        model = mlp(5, [n, n], 3, parameterization="mup", b_std=0.5)
        mults = lr_multipliers(model, family)
        for name, entry in mults.items():
            a = model.node(name).attrs
            for k, eta in entry.items():
                m = a["w_mult"] if k == "w" else a["b_mult"]
                eff = (m * m if family == "sgd" else m) * eta
                want = tp5_table(a["role"], a["in_dim"], a["out_dim"], family, k)
                ratios.setdefault((name, k), []).append(eff / want)
    assert len(ratios) == 6
    for key, r in ratios.items():
        if key == ("head", "b"):  # readout bias: fan_out = 3 at every width
            assert np.allclose(r, r[0]), key
        np.testing.assert_allclose(r, r[0], rtol=1e-12, err_msg=str(key))


def test_multipliers_are_one_outside_mup_and_at_base_width():
    sp = lr_multipliers(mlp(5, [64], 3), "adam")
    assert all(v == 1.0 for e in sp.values() for v in e.values())
    base = lr_multipliers(mlp(5, [64, 64], 3, parameterization="mup"), "adam", base_width=64)
    assert base["fc1"]["w"] == 1.0 and base["head"]["w"] == 1.0
    assert base["fc0"]["w"] == 1.0


def test_depth_mup_branch_rates():
    """TP VI: Adam rates of branch weights scale as L^(-1/2); SGD ones do not depend on L."""
    for depth in (2, 8, 32):
        m = residual_mlp(4, 16, depth, 1, parameterization="mup", branch_scale="depth",
                         rezero=True)
        adam, sgd = lr_multipliers(m, "adam", 16), lr_multipliers(m, "sgd", 16)
        assert math.isclose(adam["block0.fc"]["w"], depth ** -0.5)
        assert sgd["block0.fc"]["w"] == 1.0 and adam["block0.gate"]["alpha"] == 1.0
        assert adam["fc_in"]["w"] == 1.0


@pytest.mark.slow
def test_fit_step_equals_manual_optax_with_scaled_rates():
    data = dk.data.load("gaussian_mixture", n_train=32, n_test=8, num_classes=3, dim=5)
    model = residual_mlp(5, 16, 4, 3, parameterization="mup", branch_scale="depth")
    lr, steps = 0.05, 2
    res = fit(model, data, optimizer="adam", lr=lr, steps=steps, batch_size=32,
              lr_multipliers=True, base_width=8, progress=False)
    mults = lr_multipliers(model, "adam", 8)
    params = model.init(jax.random.PRNGKey(0))
    labels = {n: {k: f"{n}/{k}" for k in e} for n, e in params.items()}
    opt = optax.multi_transform({f"{n}/{k}": optax.adam(lr * mults[n][k])
                                 for n, e in params.items() for k in e}, labels)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    for n, e in params.items():
        for k, v in e.items():
            np.testing.assert_allclose(res.params[n][k], v, rtol=2e-5, atol=1e-6)
    # truly per-layer: r = 2, input/read-out r^(-1/2), branches r^(-1) L^(-1/2)
    assert sorted({v for e in mults.values() for v in e.values()}) == [0.25, 2 ** -0.5]


def test_bad_parameterization_and_branch_scale():
    with pytest.raises(InvalidArgumentError, match="parameterization must be one of"):
        residual_mlp(3, 8, 2, 1, parameterization="depth-mu")
    with pytest.raises(InvalidArgumentError, match="branch_scale"):
        residual_mlp(3, 8, 2, 1, branch_scale="sqrt")
    with pytest.raises(InvalidArgumentError, match="optimizer"):
        lr_multipliers(mlp(3, [4], 1), "lion")


def test_rezero_gate_starts_at_zero_and_learns():
    """α = 0 at init: the network is fc_in -> head; α gets a gradient (ReZero)."""
    m = residual_mlp(3, 8, 2, 2, rezero=True)
    p = m.init(jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    direct = jax.nn.relu(x @ p["fc_in"]["w"]) @ p["head"]["w"]
    np.testing.assert_allclose(m.apply(p, x), direct, rtol=1e-6)
    g = jax.grad(lambda q: m.apply(q, x).sum())(p)
    assert abs(float(g["block1.gate"]["alpha"])) > 0
