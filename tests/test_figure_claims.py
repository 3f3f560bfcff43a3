"""Each figure's claim on a synthetic table that satisfies it and one that violates it (no
figure runs), the claim contract, and every registered figure has a claim."""

import numpy as np
import pandas as pd
import pytest

from dynkit.errors import InvalidArgumentError
from dynkit.figures import (
    cka_across_seeds,
    cka_block_structure,
    coordinate_check,
    densenet_kernel_depth,
    depth_mup_transfer,
    dropout_stability,
    early_alignment,
    edge_of_chaos,
    edge_of_stability,
    grokking_lazy_rich,
    hessian_spectrum,
    jacot_ntk_convergence,
    layer_reinit,
    layerwise_lmc,
    lazy_vs_rich,
    lee_linearization,
    lmc_instability,
    lmc_rebasin,
    meanfield_convergence,
    meanfield_knots,
    mup_transfer,
    nc_imbalanced,
    neural_collapse,
    nngp_finite_width,
    ntk_evolution,
    pathnorm_training,
    resnet_signal,
    sgd_stability_trace,
    svcca_convergence,
    teacher_student_ode,
    unet_kernel_regression,
    unet_long_skip,
    xor_feature_learning,
)
from dynkit.figures.claims import SIZES, Claim
from dynkit.registry import FIGURES


def rebasin(aligned_over_naive):
    rows = []
    for w, naive in ((16, 1.0), (128, 0.6)):
        for alignment, b in (("naive", naive), ("weight matching", aligned_over_naive * naive)):
            rows += [
                {"family": "MLP", "width": w, "split": s, "alignment": alignment, "loss_barrier": b}
                for s in ("train", "test")
            ]
    return pd.DataFrame(rows)


def collapse(final_nc1):
    epochs = [0, 1, 10, 100, 200]
    err = [0.9, 0.1, 0.0, 0.0, 0.0]
    nc1 = [5.0, 2.0, 1.0, 0.5, final_nc1]
    return pd.DataFrame(
        [
            {"network": "MLP", "step": e, "epoch": e, "metric": "train_error", "value": v}
            for e, v in zip(epochs, err)
        ]
        + [
            {"network": "MLP", "step": e, "epoch": e, "metric": "nc1", "value": v}
            for e, v in zip(epochs, nc1)
        ]
    )


def cka_seeds(last):
    return pd.DataFrame({"depth": [0, 0, 1, 1, 2, 2], "cka": [0.9, 0.95, 0.8, 0.8, last, last]})


def reinit(fc0):
    return pd.DataFrame(
        {
            "layer": ["none", "fc0", "fc1", "fc2", "head"],
            "reinit_step": [0, 0, 0, 0, 0],
            "metric": "error",
            "value": [0.05, 0.05 + fc0, 0.1, 0.07, 0.2],
        }
    )


def svcca(steps):
    return pd.DataFrame(
        [
            {"layer": f"fc{k}", "seed": s, "step": t, "value": v}
            for k, first in enumerate(steps)
            for s in (0, 1)
            for t, v in ((0, 0.1), (first, 0.95), (1000, 1.0))
        ]
    )


def block(contrasts):
    rows = []
    for w, c in contrasts.items():
        rows += [
            {"width": w, "i": i, "j": j, "cka": 1.0 if i == j else c}
            for i in range(3)
            for j in range(3)
        ]
    return pd.DataFrame(rows)


def meanfield(gap_big):
    t = np.arange(5.0)
    ref = pd.DataFrame(
        {"time": t, "test_loss": 1 / (1 + t), "is_ref": True, "m": np.nan, "seed": 0}
    )
    nets = [
        pd.DataFrame({"time": t, "test_loss": 1 / (1 + t) + g, "is_ref": False, "m": m, "seed": 0})
        for m, g in ((10, 0.2), (100, gap_big))
    ]
    return pd.concat([ref, *nets], ignore_index=True)


def lazy(rel_dist_big):
    return pd.DataFrame(
        {
            "kind": "summary",
            "alpha": [0.1, 1.0, 10.0],
            "rel_dist": [2.0, 0.8, rel_dist_big],
            "train_loss": [1e-3] * 3,
        }
    )


def knots(max_knots):
    return pd.DataFrame(
        {
            "kind": ["interval"] * 5 + ["summary"],
            "knots": [1, 2, max_knots, 0, 1, np.nan],
            "train_loss": [np.nan] * 5 + [1e-3],
        }
    )


def xor(end_signal):
    d = 30
    return pd.DataFrame(
        {
            "d": d,
            "signal": [0.05, 0.2, 0.4, end_signal],
            "test_loss": [0.69, 0.68, 0.3, 0.01],
            "test_error": [0.5, 0.5, 0.1, 0.01],
        }
    )


def alignment(late_exponent):
    t = np.geomspace(1, 1000, 20)
    return pd.DataFrame(
        {
            "kind": "history",
            "time": t,
            "train_loss": t**late_exponent,
            "aligned": np.linspace(0.5, 0.97, 20),
            "eff_rank": np.linspace(6, 2, 20),
        }
    )


def layerwise(aligned_peak):
    rows = []
    for alignment_, peak in (("naive", 1.0), ("weight matching", aligned_peak)):
        for layer in ("fc0", "head"):
            rows += [
                {
                    "alignment": alignment_,
                    "layer": layer,
                    "alpha": a,
                    "loss": 0.1 + peak * 4 * a * (1 - a),
                }
                for a in (0, 0.5, 1)
            ]
    return pd.DataFrame(rows)


def instability(late_barrier):
    return pd.DataFrame(
        {
            "split": "train",
            "k": [0, 10, 30, 100],
            "barrier_loss": [0.3, 0.05, late_barrier, 0.0],
            "barrier_error": [0.05, 0.01, 0.0, 0.0],
            "total_steps": 600,
        }
    )


def dropout(quarter_big):
    rows = []
    for N, q in ((8, 0.4), (64, quarter_big)):
        for k, d in ((N // 4, q), (N // 2, q / 2), (N, 0.0)):
            rows.append(
                {"kind": "dropout", "N": N, "k": k, "keep_fraction": k / N, "delta_loss": d}
            )
    return pd.DataFrame(rows)


def kurtosis(exponent):
    w = np.array([4, 8, 16, 32, 64])
    return pd.DataFrame({"width": w, "excess_kurtosis": 15.0 * w**exponent})


def lee(exponent):
    return pd.DataFrame(
        [
            {"step": s, "width": w, "seed": 0, "rmse": (w**exponent if s else 0.0)}
            for w in (64, 256, 1024)
            for s in (0, 100)
        ]
    )


def unet_df(big_gap):
    return pd.DataFrame(
        {
            "width": [8, 32, 128],
            "gap": [1.0, 0.5, big_gap],
            "test_loss_net": [2.0, 1.3, 1.05],
            "test_loss_ntk": [1.0, 1.0, 1.0],
        }
    )


def densenet(dense_deep):
    rows = [{"arch": "relu map", "depth": 0, "c0": c, "correlation": c} for c in (0.2, 1.0)]
    for depth, plain, dense, res in ((1, 0.5, 0.3, 0.3), (50, 0.97, dense_deep, 0.5)):
        rows += [
            {"arch": a, "depth": depth, "c0": 0.2, "correlation": v}
            for a, v in (("plain", plain), ("dense", dense), ("residual", res))
        ]
    return pd.DataFrame(rows)


def chaos(peak_offset):
    sw2 = np.linspace(1.0, 3.0, 21)
    rows = []
    for sb2, crit in ((0.0, 1.0), (0.1, 1.6)):
        peak = crit + peak_offset
        rows += [
            {"sb2": sb2, "sw2": s, "sw2_critical": crit, "xi_c": 1 / (abs(s - peak) + 0.01)}
            for s in sw2
        ]
    return pd.DataFrame(rows)


def eos(late_sharpness_factor):
    rows = []
    steps = np.arange(1000)
    for lr in (0.2, 0.4):
        two = 2 / lr
        sharp = np.where(steps < 300, two * steps / 300, two * late_sharpness_factor)
        loss = np.exp(-steps / 200) * (1 + 0.1 * np.sin(steps))
        rows.append(
            pd.DataFrame(
                {"lr": lr, "step": steps, "metric": "sharpness", "value": sharp, "two_over_lr": two}
            )
        )
        rows.append(
            pd.DataFrame(
                {"lr": lr, "step": steps, "metric": "loss", "value": loss, "two_over_lr": two}
            )
        )
    return pd.concat(rows, ignore_index=True)


def jacot(trained_big):
    rows = []
    for phase, errs in (("init", (0.4, 0.1)), ("trained", (0.4, trained_big))):
        for width, e in zip((64, 1024), errs):
            rows += [
                {"phase": phase, "width": width, "seed": 0, "ntk": 1 + e, "ntk_analytic": 1.0},
                {
                    "phase": phase,
                    "width": width,
                    "seed": 0,
                    "ntk": 2 * (1 + e),
                    "ntk_analytic": 2.0,
                },
            ]
    return pd.DataFrame(rows)


def ntk_evo(late_velocity):
    steps = [0, 10, 20, 30, 100, 200, 300]
    vel = [1.0, 1.0, 1.0, 1.0, late_velocity, late_velocity, late_velocity]
    align = np.linspace(0.1, 0.4, 7)
    return pd.DataFrame(
        [{"step": s, "metric": "kernel_velocity", "value": v} for s, v in zip(steps, vel)]
        + [{"step": s, "metric": "centered_alignment", "value": a} for s, a in zip(steps, align)]
    )


def teacher(sgd_factor):
    t = np.array([0.0, 5, 10, 20, 30, 60, 100])
    ode = np.array([1.0, 0.2, 0.1, 0.1, 0.1, 0.03, 0.01])
    rows = []
    for seed in (0, 1):
        rows += [{"time": ti, "source": "ode", "seed": seed, "eg": e} for ti, e in zip(t, ode)]
        rows += [
            {"time": ti, "source": "sgd", "seed": seed, "eg": e * sgd_factor}
            for ti, e in zip(t, ode)
        ]
    return pd.DataFrame(rows)


def grokking(largest_generalizes):
    rows = []
    t = np.arange(0, 101, 10.0)
    for k, alpha in enumerate((0.3, 1.0, 3.0, 10.0, 30.0)):
        tau = 10 * (k + 1) if (k < 3 or largest_generalizes) else np.inf
        test = np.where(t >= tau, 0.1, 1.0)
        rows.append(
            pd.DataFrame(
                {
                    "alpha": alpha,
                    "time": t,
                    "test_loss": test,
                    "train_loss": np.where(t > 0, 0.01, 1.0),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def imbalanced(dead_measured):
    return pd.DataFrame(
        {
            "kind": "class",
            "quantity": ["w_norm"] * 3,
            "predicted": [1.0, 0.5, 0.0],
            "measured": [1.001, 0.4999, dead_measured],
        }
    )


def pathnorm(rescaled_op):
    rows = []
    for q in pathnorm_training.QS:
        rows += [
            {"variant": "trained", "quantity": "pathnorm", "q": q, "step": s, "value": v}
            for s, v in ((0, 1.0), (100, 3.0))
        ]
        rows.append(
            {"variant": "rescaled", "quantity": "pathnorm", "q": q, "step": 100, "value": 3.0}
        )
    rows += [
        {
            "variant": "trained",
            "quantity": "operator_norm_product",
            "q": np.nan,
            "step": s,
            "value": v,
        }
        for s, v in ((0, 1.0), (100, 5.0))
    ]
    rows.append(
        {
            "variant": "rescaled",
            "quantity": "operator_norm_product",
            "q": np.nan,
            "step": 100,
            "value": rescaled_op,
        }
    )
    return pd.DataFrame(rows)


def spectrum(class_mean_ratio):
    """A 10-class spectrum: 10 outliers above the bulk edge 1, G_class at ``ratio`` of each."""
    grid = np.linspace(0, 1, 101)
    out = np.linspace(20, 5, 10)
    cm = np.r_[class_mean_ratio * out[:9], 0.5, 0.1]
    rows = [{"series": "density", "x": g, "value": 1.0} for g in grid]
    rows += [{"series": "outlier", "x": i + 1, "value": v} for i, v in enumerate(out)]
    rows += [{"series": "class_mean", "x": i + 1, "value": v} for i, v in enumerate(cm)]
    rows += [{"series": "bulk_edge", "x": 0, "value": 1.0}]
    return pd.DataFrame(rows)


def stability(b1_trace_factor):
    rows = []
    for lr in (0.005, 0.01):
        two = 2 / lr
        for b, factor in ((1, b1_trace_factor), (4, 1.5), (256, 3.0)):
            rows.append({"lr": lr, "batch_size": b, "gd": b == 256, "two_over_lr": two,
                         "trace": factor * two, "trace_se": 1.0, "lambda_max": 0.5 * two,
                         "loss": 1e-3})
    return pd.DataFrame(rows)


def coordinates(mup_slope):
    """Update sizes ``width^slope`` per parameterization and layer, steps 1..2."""
    slopes = {"standard": {"act0": 0.5, "act1": 0.5, "head": 1.0},
              "ntk": {"act0": -0.5, "act1": -0.5, "head": 0.0},
              "mup": {"act0": mup_slope, "act1": mup_slope, "head": mup_slope}}
    return pd.DataFrame([{"parameterization": p, "width": w, "step": t, "layer": layer,
                          "activation_size": 1.0, "update_size": float(w) ** a}
                         for p, by_layer in slopes.items() for layer, a in by_layer.items()
                         for w in (64, 256, 1024) for t in (0, 1, 2)])


def signal(scaled_growth):
    """Nine blocks in three stages; ``scaled_growth`` is the per-block growth of 1/sqrt(L)."""
    rows = []
    for i in range(9):
        rows += [{"variant": "BatchNorm", "index": i, "var": 1.0 + i % 3, "residual_var": 1.0},
                 {"variant": "no norm", "index": i, "var": 2.0 ** i, "residual_var": 2.0 ** i},
                 {"variant": "no norm, 1/sqrt(L)", "index": i, "var": scaled_growth ** i,
                  "residual_var": 0.1},
                 {"variant": "no norm, ReZero", "index": i, "var": 1.0, "residual_var": 0.0}]
    return pd.DataFrame(rows)


def transfer(axis, by, stable, drifting, drift_octaves):
    """Loss ``(log2 lr - optimum)^2``; the optimum of ``drifting`` moves by ``drift_octaves``
    over the three sizes, that of ``stable`` by half an octave."""
    rows = []
    for name, total in ((stable, 0.5), (drifting, drift_octaves)):
        for k, size in enumerate((2, 4, 8)):
            opt = -3.0 - total * k / 2
            rows += [{by: name, axis: size, "lr": 2.0 ** e, "log2_lr": e, "seed": seed,
                      "loss": (e - opt) ** 2 + 0.1}
                     for e in np.arange(-8.0, 0.5, 0.5) for seed in (0, 1)]
    return pd.DataFrame(rows)


def long_skip(small_kappa_oscillation):
    rows = []
    for kappa in unet_long_skip.KAPPAS:
        osc = small_kappa_oscillation if kappa == min(unet_long_skip.KAPPAS) else 0.3
        rows += [{"kind": "loss", "kappa": kappa, "step": s, "loss": 1 / (1 + s * kappa ** -0.1)}
                 for s in range(0, 60, 5)]
        rows += [{"kind": "stage", "kappa": kappa, "stage": st, "feature_oscillation": osc,
                  "grad_oscillation": osc} for st in ("down0", "mid", "up0")]
    return pd.DataFrame(rows)


#: module -> (a table satisfying its claim, a table violating it)
CASES = {
    lmc_rebasin: (rebasin(0.1), rebasin(0.6)),
    neural_collapse: (collapse(0.05), collapse(0.8)),
    cka_across_seeds: (cka_seeds(0.5), cka_seeds(0.85)),
    layer_reinit: (reinit(0.5), reinit(0.01)),
    svcca_convergence: (svcca([10, 20, 20, 50]), svcca([10, 50, 20, 60])),
    cka_block_structure: (block({8: 0.2, 32: 0.5}), block({8: 0.5, 32: 0.2})),
    meanfield_convergence: (meanfield(0.05), meanfield(0.3)),
    lazy_vs_rich: (lazy(0.1), lazy(0.5)),
    meanfield_knots: (knots(3), knots(4)),
    xor_feature_learning: (xor(0.8), xor(0.3)),
    early_alignment: (alignment(-1.0), alignment(-0.3)),
    layerwise_lmc: (layerwise(0.2), layerwise(1.5)),
    lmc_instability: (instability(5e-4), instability(0.01)),
    dropout_stability: (dropout(0.1), dropout(0.5)),
    nngp_finite_width: (kurtosis(-1.0), kurtosis(-0.5)),
    lee_linearization: (lee(-0.5), lee(-1.2)),
    unet_kernel_regression: (unet_df(0.2), unet_df(0.6)),
    densenet_kernel_depth: (densenet(0.4), densenet(0.9)),
    edge_of_chaos: (chaos(0.0), chaos(0.5)),
    edge_of_stability: (eos(1.02), eos(1.3)),
    jacot_ntk_convergence: (jacot(0.1), jacot(0.3)),
    ntk_evolution: (ntk_evo(0.01), ntk_evo(0.5)),
    teacher_student_ode: (teacher(1.1), teacher(1.5)),
    grokking_lazy_rich: (grokking(False), grokking(True)),
    nc_imbalanced: (imbalanced(1e-4), imbalanced(0.1)),
    pathnorm_training: (pathnorm(8.0), pathnorm(5.1)),
    hessian_spectrum: (spectrum(0.9), spectrum(0.4)),
    sgd_stability_trace: (stability(0.9), stability(1.3)),
    coordinate_check: (coordinates(0.0), coordinates(0.3)),
    resnet_signal: (signal(1.05), signal(1.5)),
    mup_transfer: (transfer("width", "parametrization", "muP", "SP", 2.0),
                   transfer("width", "parametrization", "muP", "SP", 1.0)),
    depth_mup_transfer: (transfer("depth", "branches", "muP, branch 1/sqrt(L)", "muP, branch 1",
                                  3.0),
                         transfer("depth", "branches", "muP, branch 1/sqrt(L)", "muP, branch 1",
                                  0.5)),
    unet_long_skip: (long_skip(0.1), long_skip(0.5)),
}


@pytest.mark.parametrize("module", list(CASES), ids=lambda m: m.make.name)
def test_claim_passes_on_a_table_that_shows_it_and_fails_on_one_that_does_not(module):
    good, bad = CASES[module]
    assert module.make.claim is module.claim
    ok = module.claim(good)
    assert ok.passed, ok
    assert ok.measured and all(isinstance(k, str) for k in ok.measured)
    assert ok.statement and ok.size in SIZES
    ko = module.claim(bad)
    assert not ko.passed, ko
    assert str(ko).startswith("FAIL (")


def test_every_registered_figure_has_a_tested_claim():
    names = {m.make.name for m in CASES}
    missing = [e.name for e in FIGURES.entries() if getattr(e.func, "claim", None) is None]
    assert missing == []
    assert set(FIGURES.names()) <= names, set(FIGURES.names()) - names


def test_claim_contract():
    never = Claim("says nothing", lambda df: ({"n": len(df)}, {}))
    with pytest.raises(InvalidArgumentError, match="cannot fail"):
        never(pd.DataFrame({"x": [1]}))
    with pytest.raises(InvalidArgumentError, match="size"):
        Claim("x", lambda df: ({}, {"x": True}), size="huge")
    assert Claim("x", lambda df: ({}, {"x": True}), size="paper").size == "paper"
    half = Claim("both", lambda df: ({"a": 1.0}, {"first": True, "second": False}))(None)
    assert not half.passed and "second" in str(half) and "first" not in str(half).split("[")[0]
