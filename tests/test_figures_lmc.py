"""Quick-mode mode-connectivity figures: files exist and the CSV shows the phenomenon."""

import numpy as np
import pandas as pd
import pytest

from dynkit import figures


def _make(name, tmp_path):
    paths = figures.make(name, tmp_path, quick=True)
    png, csv = (next(p for p in paths if p.suffix == s) for s in (".png", ".csv"))
    assert png.stat().st_size > 5000
    return pd.read_csv(csv)


def test_lmc_rebasin_alignment_lowers_barrier(tmp_path):
    df = _make("lmc-rebasin", tmp_path)
    train = df[df["split"] == "train"].pivot_table(index="width", columns="alignment",
                                                   values="loss_barrier")
    assert (train["weight matching"] < 0.5 * train["naive"]).all()


def test_layerwise_lmc_heatmap_data(tmp_path):
    df = _make("layerwise-lmc", tmp_path)
    assert set(df["layer"]) == {"fc0", "fc1", "fc2", "head"}
    delta = df["loss"] - df.groupby(["alignment", "layer"])["loss"].transform("first")
    worst = delta.groupby(df["alignment"]).max()
    assert worst["weight matching"] < worst["naive"]


def test_instability_vanishes_at_the_end(tmp_path):
    df = _make("lmc-instability", tmp_path)
    end = df[df["k"] == df["k"].max()]
    np.testing.assert_allclose(end["barrier_loss"], 0.0, atol=1e-6)


def test_dropout_stability_improves_with_width(tmp_path):
    df = _make("dropout-stability", tmp_path)
    drop = df[df["kind"] == "dropout"]
    for _, g in drop.groupby("N"):
        d = g.sort_values("k")["delta_loss"].to_numpy()
        assert np.all(np.diff(d) <= 1e-9) and d[-1] == pytest.approx(0.0, abs=1e-6)
    quarter = drop[np.isclose(drop["keep_fraction"], 0.25)].sort_values("N")["delta_loss"]
    assert quarter.iloc[-1] < quarter.iloc[0]
