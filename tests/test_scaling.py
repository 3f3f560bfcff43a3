"""dynkit.analyses.scaling: coordinate check, signal propagation, residual branch scaling."""

import jax
import numpy as np
import pytest

import dynkit as dk
from dynkit.analyses.scaling import coordinate_check, residual_forward_variance, signal_propagation
from dynkit.errors import InvalidArgumentError
from dynkit.models import mlp, residual_mlp

WIDTHS = [64, 256, 1024]


@pytest.fixture(scope="module")
def mixture():
    return dk.data.load("gaussian_mixture", n_train=64, n_test=8, num_classes=4, dim=8)


def run_check(data, par, lr):
    return coordinate_check(lambda n: mlp(8, [n, n], 4, parameterization=par, bias=False),
                            WIDTHS, data, steps=2, lr=lr, batch_size=8, loss="mse",
                            seeds=range(3))


@pytest.mark.slow
def test_coordinate_check_mup_flat_sp_grows(mixture):
    """TP V coordinate check with SGD: μP update sizes are flat in width (within 1.3 over
    64..1024); SP hidden updates grow like sqrt(n) (ΔW1 φ0 = η δ1 |φ0|², δ1 ~ n^-1/2) and the
    output like n."""
    mup = run_check(mixture, "mup", 0.2)
    f = mup.frame[mup.frame["step"] >= 1]
    spread = f.groupby(["layer", "step"])["update_size"].agg(lambda v: v.max() / v.min())
    assert (spread < 1.3).all(), spread
    assert mup.flagged == []
    sp = run_check(mixture, "standard", 0.02)
    slopes = sp.slopes.set_index(["layer", "step"])["slope"]
    assert slopes["act1", 1] > 0.4 and slopes["head", 1] > 0.9, slopes
    assert {"act1", "head"} <= set(sp.flagged)
    assert set(sp.frame.columns) == {"width", "step", "layer", "activation_size", "update_size"}


def test_coordinate_check_rejects_bad_widths(mixture):
    with pytest.raises(InvalidArgumentError, match="strictly increasing"):
        coordinate_check(lambda n: mlp(8, [n], 4), [128, 64], mixture, steps=1)


def numpy_signal(p, x, x2, depth, s):
    """Brock et al. statistics of a residual MLP (standard param, no bias), by hand."""
    relu = lambda v: np.maximum(v, 0)
    w = {k: np.asarray(v["w"], np.float64) for k, v in p.items()}

    def stream(inp):
        hs, bs, h = [], [], inp @ w["fc_in"]
        for i in range(depth):
            b = s * (relu(h) @ w[f"block{i}.fc"])
            h = h + b
            hs.append(h)
            bs.append(b)
        return hs, bs

    hs, bs = stream(np.asarray(x, np.float64))
    hs2, _ = stream(np.asarray(x2, np.float64))
    # backward of L = (1/B) Σ f: dL/dh_L = relu'(h_L) ⊙ (1/B) 1 Wh^T, then through the blocks
    g = (hs[-1] > 0) * (np.ones((len(x), w["head"].shape[1])) @ w["head"].T) / len(x)
    grads = [g]
    for i in range(depth - 1, 0, -1):
        g = g + s * ((g @ w[f"block{i}.fc"].T) * (hs[i - 1] > 0))
        grads.insert(0, g)
    rows = []
    for h, b, h2, gr in zip(hs, bs, hs2, grads):
        cos = np.sum(h * h2, 1) / np.linalg.norm(h, axis=1) / np.linalg.norm(h2, axis=1)
        rows.append([np.mean(h.mean(0) ** 2), np.mean(h.var(0)), np.mean(b.var(0)),
                     cos.mean(), np.linalg.norm(gr)])
    return np.array(rows)


@pytest.mark.slow
def test_signal_propagation_equals_numpy():
    depth = 4
    m = residual_mlp(5, 16, depth, 3, branch_scale="depth")
    p = m.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    x2 = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    df = signal_propagation(m, p, x, x2)
    want = numpy_signal(p, x, x2, depth, depth ** -0.5)
    got = df[["mean_sq", "var", "residual_var", "correlation", "grad_norm"]].to_numpy()
    np.testing.assert_allclose(got, want, rtol=2e-5)
    assert df["block"].tolist() == [f"block{i}.add" for i in range(depth)]


@pytest.mark.slow
def test_signal_propagation_needs_residual_blocks():
    m = mlp(5, [8, 8], 2)
    p = m.init(jax.random.PRNGKey(0))
    x = np.ones((4, 5), np.float32)
    with pytest.raises(InvalidArgumentError, match="no residual blocks"):
        signal_propagation(m, p, x)
    assert len(signal_propagation(m, p, x, residual=False)) == 2


def sample_init(model, seed):
    """w ~ N(0, init_std²) per layer, drawn with numpy (model.init compiles slowly at L=256)."""
    rng = np.random.default_rng(seed)
    return {n: {"w": (rng.standard_normal(sh["w"]) * model.node(n).attrs["init_std"])
                .astype(np.float32)} for n, sh in model.param_shapes().items()}


@pytest.mark.slow
@pytest.mark.parametrize("branch,depths", [("depth", (4, 16, 64, 256)), ("none", (4, 8, 16))])
def test_branch_scaling_forward_variance(branch, depths):
    """Monte Carlo over init of a ReLU residual MLP vs the closed form q_L = q_0 (1 + s²)^L:
    bounded by e·q_0 for s = 1/sqrt(L), doubling per block for s = 1."""
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    for depth in depths:
        m = residual_mlp(8, 256, depth, 1, branch_scale=branch)
        s = depth ** -0.5 if branch == "depth" else 1.0
        ratios = []
        for seed in range(2):
            out = m.forward(sample_init(m, seed), x,
                            keep=["fc_in", f"block{depth - 1}.add"])
            q0 = np.mean(np.asarray(out["fc_in"], np.float64) ** 2)
            ratios.append(np.mean(np.asarray(out[f"block{depth - 1}.add"], np.float64) ** 2) / q0)
        closed = residual_forward_variance(1.0, depth, s)[-1]
        np.testing.assert_allclose(closed, (1 + s * s) ** depth, rtol=1e-6)
        np.testing.assert_allclose(np.mean(ratios), closed, rtol=0.15)
        if branch == "depth":
            assert closed < np.e


@pytest.mark.slow
def test_signal_metric_via_cli(tmp_path):
    """`dynkit metrics --metrics signal` on a tiny run (two checkpoints) equals
    signal_propagation of the last one on the first training points."""
    import pandas as pd

    from dynkit.analyses.scaling_signal import SIGNAL_POINTS
    from dynkit.cli import main

    data = dk.data.load("gaussian_mixture", seed=0)  # what --data gaussian_mixture loads
    model = residual_mlp(2, 8, 2, 3, branch_scale="depth")
    (tmp_path / "run").mkdir()
    for step, seed in ((0, 0), (2, 1)):
        params = model.init(jax.random.PRNGKey(seed))
        dk.save_checkpoint(tmp_path / "run" / f"step_{step:06d}.safetensors", model, params,
                           step=step)
    assert main(["metrics", str(tmp_path / "run"), "--metrics", "signal", "--data",
                 "gaussian_mixture", "--out", str(tmp_path / "m")]) == 0
    table = pd.read_csv(tmp_path / "m" / "metrics.csv")
    last = table[table["step"] == 2].set_index(["metric", "layer"])["value"]
    want = signal_propagation(model, params, data.x_train[:SIGNAL_POINTS])
    for _, row in want.iterrows():
        assert last["signal_var", row["block"]] == pytest.approx(row["var"], rel=1e-5)
        assert last["signal_grad_norm", row["block"]] == pytest.approx(row["grad_norm"], rel=1e-5)


@pytest.mark.slow
def test_skip_stability_homogeneity_and_errors():
    """At init (zero biases) a ReLU U-Net is positively homogeneous of degree 1 in its input:
    scaling x by c scales every stage's feature norm by c; with target y = 0 the loss is
    degree 2, so the gradients of stage weights scale by c² (brute-force check of the
    bookkeeping); the oscillation of a series scaled by a constant is unchanged."""
    from dynkit.analyses.scaling import oscillation, skip_stability

    m = dk.models.unet(1, 4, input_shape=(4, 4, 1), skip_scale=0.5)
    p = m.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 1)).astype(np.float32)
    a, _ = skip_stability((m, p), x, 0 * x)
    b, _ = skip_stability((m, p), 3 * x, 0 * x)
    np.testing.assert_allclose(b["feature_norm"], 3 * a["feature_norm"], rtol=1e-5)
    np.testing.assert_allclose(b["grad_norm"], 9 * a["grad_norm"], rtol=1e-4)
    assert a["stage"].tolist() == ["enc1", "bottleneck", "dec1"]
    assert oscillation([2.0, 4.0, 3.0, 5.0]) == pytest.approx(oscillation([1.0, 2.0, 1.5, 2.5]))
    with pytest.raises(InvalidArgumentError, match="unet"):
        skip_stability((mlp(3, [4], 1), mlp(3, [4], 1).init(jax.random.PRNGKey(0))),
                       np.ones((2, 3)), np.ones((2, 1)))
