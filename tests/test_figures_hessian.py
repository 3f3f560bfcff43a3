"""Curvature figures: quick mode writes PNG + CSV showing the paper's claim."""

import numpy as np
import pytest


@pytest.mark.slow
def test_edge_of_stability(quick_figure):
    from dynkit.figures import edge_of_stability as eos

    df = quick_figure(eos)
    assert sorted(df["lr"].unique()) == [0.2, 0.3, 0.4]
    gap = eos.eos_gap(df)
    assert (gap < 0.10).all(), gap            # λ_max within 10% of 2/η (Cohen et al. 2021)
    for lr, d in df[df["metric"] == "loss"].groupby("lr"):
        loss = d.sort_values("step")["value"].to_numpy()
        assert loss[-1] < 0.2 * loss[100]     # the loss keeps falling ...
        assert (np.diff(loss[10:]) > 0).sum() > 20           # ... non-monotonically
    sharp = df[df["metric"] == "sharpness"]
    early = sharp[(sharp["lr"] == 0.2) & (sharp["step"] <= 500)]["value"]
    assert early.min() < 0.9 * 2 / 0.2        # it rises to 2/η from below


@pytest.mark.slow
def test_hessian_spectrum(quick_figure):
    from dynkit.figures import hessian_spectrum as hs

    df = quick_figure(hs)
    claims = hs.spectrum_claims(df)
    C = hs.CLASSES
    assert C - 1 <= claims["num_outliers"] <= C + 2, claims       # about C outliers
    assert claims["class_mean_above_edge"] == C - 1, claims        # G_class: C-1 outliers
    assert 0.6 <= claims["min_ratio"] and claims["max_ratio"] <= 1.05, claims
    dens = df[df.series == "density"]
    assert abs(np.trapezoid(dens["value"], dens["x"]) - 1) < 1e-3


@pytest.mark.slow
def test_sgd_stability_trace(quick_figure):
    from dynkit.figures import sgd_stability_trace as sst

    df = quick_figure(sst)
    assert len(df) == 6 and df["trace"].notna().all()
    claims = sst.stability_claims(df)
    assert all(claims.values()), (claims, df)
