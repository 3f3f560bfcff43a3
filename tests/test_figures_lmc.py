"""Quick-mode mode-connectivity figures: files exist and the CSV shows the phenomenon."""

import numpy as np
import pytest


@pytest.mark.slow
def test_lmc_rebasin_alignment_lowers_barrier(quick_figure):
    df = quick_figure("lmc-rebasin")
    train = df[df["split"] == "train"].pivot_table(index="width", columns="alignment",
                                                   values="loss_barrier")
    assert (train["weight matching"] < 0.5 * train["naive"]).all()


@pytest.mark.slow
def test_layerwise_lmc_heatmap_data(quick_figure):
    df = quick_figure("layerwise-lmc")
    assert set(df["layer"]) == {"fc0", "fc1", "fc2", "head"}
    delta = df["loss"] - df.groupby(["alignment", "layer"])["loss"].transform("first")
    worst = delta.groupby(df["alignment"]).max()
    assert worst["weight matching"] < worst["naive"]


@pytest.mark.slow
def test_instability_at_init_vanishes_after_a_few_steps(quick_figure):
    """Frankle et al. 2020: children spawned at initialization are separated by a loss barrier,
    children spawned after a short stretch of training are linearly connected."""
    df = quick_figure("lmc-instability")
    train = df[df["split"] == "train"].set_index("k")
    assert train.loc[0, "barrier_loss"] > 0.02 and train.loc[0, "barrier_error"] > 0.005
    late = train[train.index >= 30]
    np.testing.assert_allclose(late["barrier_loss"], 0.0, atol=1e-3)


@pytest.mark.slow
def test_dropout_stability_improves_with_width(quick_figure):
    df = quick_figure("dropout-stability")
    drop = df[df["kind"] == "dropout"]
    for _, g in drop.groupby("N"):
        d = g.sort_values("k")["delta_loss"].to_numpy()
        assert np.all(np.diff(d) <= 1e-9) and d[-1] == pytest.approx(0.0, abs=1e-6)
    quarter = drop[np.isclose(drop["keep_fraction"], 0.25)].sort_values("N")["delta_loss"]
    assert quarter.iloc[-1] < quarter.iloc[0]
