"""Smoke tests of the NTK figures: quick mode writes PNG + CSV showing the phenomenon."""

import numpy as np
import pytest


@pytest.mark.slow
def test_lee_linearization(quick_figure):
    from dynkit.figures import lee_linearization as lee

    df = quick_figure(lee)
    start = df[df["step"] == 0]
    assert np.all(start["rmse"] < 1e-4)                     # f_lin(θ0) = f(θ0) exactly
    assert np.allclose(start["loss_net"], start["loss_lin"], rtol=1e-5)
    end = df[df["step"] == df["step"].max()]
    assert np.all(end["loss_net"] < 0.05 * start["loss_net"].to_numpy())   # both trained
    assert np.all(end["loss_lin"] < 0.05 * start["loss_lin"].to_numpy())
    # the gap shrinks with width, about width^(-1/2) (Lee et al.)
    result = lee.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_ntk_evolution(quick_figure):
    from dynkit.figures import ntk_evolution as evo

    df = quick_figure(evo)
    dist = evo.metric(df, "kernel_distance_init")
    vel = evo.metric(df, "kernel_velocity")
    assert dist.iloc[0] == 0 and dist.iloc[-1] > 0
    # velocity = distance between consecutive checkpoints / steps between them
    prev = evo.metric(df, "kernel_distance_prev")
    assert np.allclose(vel.to_numpy(), prev.to_numpy() / np.diff(dist.index.to_numpy()))
    # fast early, slow late (Fort et al.); the NTK aligns with the labels
    result = evo.claim(df)
    assert result.passed, result
    acc = evo.metric(df, "test_accuracy")
    assert acc.iloc[-1] > 0.9                             # and the net learned the digits


@pytest.mark.slow
def test_grokking_lazy_rich(quick_figure):
    """Asserted in quick mode (alphas 0.3 ... 30, horizon t = 1e4):
    every alpha fits the training set (train loss < 10% of its start); the first time the
    test loss falls below half its start grows strictly with alpha and is never reached by the
    two largest alphas (lazy: memorized, not generalized); the smallest alpha generalizes
    (test loss < 20% of start); the initial NTK alignment is the same for all alpha (the NTK
    scales as alpha^2, alignment is scale invariant) and its gain and the weights' relative
    motion fall with alpha."""
    from dynkit.figures import grokking_lazy_rich as grok

    df = quick_figure(grok)
    t_train = grok.first_time_below(df, "train_loss", 0.1)
    assert np.all(np.isfinite(t_train))
    result = grok.claim(df)
    assert result.passed, result
    g = df.sort_values("time").groupby("alpha")
    first, last = g.first(), g.last()
    assert last["test_loss"].iloc[-1] > 0.5 * first["test_loss"].iloc[-1]
    assert np.allclose(first["alignment"], first["alignment"].iloc[0], rtol=1e-4)
    gain = (last["alignment"] - first["alignment"]).to_numpy()
    assert np.all(np.diff(gain) < 0) and gain[-1] >= 0
    assert np.all(np.diff(last["rel_dist"].to_numpy()) < 0)
