"""lr_transfer: each vmapped cell equals its own ``fit`` run, divergence is recorded, an
interrupted sweep resumes by training only the missing cells, and bad input is refused."""

import shutil

import numpy as np
import pandas as pd
import pytest

import dynkit as dk
from dynkit.analyses import scaling_transfer as st
from dynkit.errors import InvalidArgumentError
from dynkit.train import fit


@pytest.fixture(scope="module")
def data():
    return dk.data.load("gaussian_mixture", n_train=48, n_test=16, num_classes=3, dim=5)


def _mup(n):
    return dk.models.mlp(5, [n, n], 3, parameterization="mup")


@pytest.mark.slow
def test_cells_equal_fit_runs_and_divergence_is_recorded(data):
    """Independent reference: one ``fit`` call per cell (its own jit step, batches, evaluate)."""
    lrs, seeds = [0.05, 0.5, 1e4], [0, 3]
    kw = {"optimizer": "momentum", "batch_size": 16, "lr_multipliers": True, "base_width": 8.0}
    df = st.lr_transfer(_mup, [8], lrs, data, 7, seeds, progress=False, **kw)
    assert len(df) == 3 * 2
    for width, lr, seed in [(8, 0.5, 3)]:
        hist = fit(_mup(width), data, lr=lr, seed=seed, steps=7, progress=False,
                   **kw).history.set_index(["step", "split"])
        row = df[(df.width == width) & (df.lr == lr) & (df.seed == seed)].iloc[0]
        np.testing.assert_allclose([row.loss, row.test_loss, row.accuracy, row.test_accuracy],
                                   [hist.loc[(7, "train"), "loss"], hist.loc[(7, "test"), "loss"],
                                    hist.loc[(7, "train"), "accuracy"],
                                    hist.loc[(7, "test"), "accuracy"]], rtol=2e-5)
    # lr 1e4 blows up (NaN/inf) for at least one seed: recorded, not raised
    assert df[df.lr == 1e4]["diverged"].any() and not df[df.lr < 1]["diverged"].any()
    np.testing.assert_array_equal(df["diverged"], ~np.isfinite(df["loss"]))
    opt = st.optimal_lr(df)
    # brute force: the argmin of the seed-mean final loss among the finite rates
    for width, g in df[~df.diverged].groupby("width"):
        best = g.groupby("log2_lr")["loss"].mean().idxmin()
        assert opt.set_index("width").loc[width, "log2_lr_opt"] == best


@pytest.mark.slow
def test_interrupted_sweep_trains_only_missing_cells(data, tmp_path, monkeypatch):
    args = (_mup, [8], [0.1, 0.4], data, 5, [0, 1])
    first = st.lr_transfer(*args, out=tmp_path, batch_size=16, progress=False)
    # an interrupted sweep: two cells never finished (no metrics.csv), one folder missing
    (st.cell_dir(tmp_path, "width", 8, 0.4, 1) / "metrics.csv").unlink()
    shutil.rmtree(st.cell_dir(tmp_path, "width", 8, 0.1, 0))
    trained = []
    real = st._train_cells
    monkeypatch.setattr(st, "_train_cells",
                        lambda model, d, cells, **kw: trained.extend(cells) or
                        real(model, d, cells, **kw))
    again = st.lr_transfer(*args, out=tmp_path, batch_size=16, progress=False)
    assert sorted(trained) == [(0.1, 0), (0.4, 1)]
    pd.testing.assert_frame_equal(first, again, rtol=1e-6)
    # every cell folder is a run that dynkit's run reader loads
    ckpt = dk.load_checkpoint(st.cell_dir(tmp_path, "width", 8, 0.4, 1)
                              / "step_000005.safetensors")
    assert ckpt.meta["lr"] == 0.4 and ckpt.model.config["widths"] == [8, 8]
    with pytest.raises(InvalidArgumentError, match="another sweep"):
        st.lr_transfer(*args, out=tmp_path, batch_size=8, progress=False)


@pytest.mark.parametrize("sizes", [[16, 8], [8, 8], []])
def test_sizes_must_increase(data, sizes):
    with pytest.raises(InvalidArgumentError, match="strictly increasing"):
        st.lr_transfer(_mup, sizes, [0.1], data, 2, progress=False)


@pytest.mark.parametrize("text", ["2^0:2^-8", "2^a:2^0", "0.1,,x", "-1,0.1", "2^-8:2^0:0"])
def test_malformed_lr_ranges(text):
    with pytest.raises(InvalidArgumentError, match="lr"):
        st.lr_grid(text)


def test_lr_grid_powers_of_two():
    assert st.lr_grid("2^-8:2^0") == [2.0 ** e for e in range(-8, 1)]
    assert st.lr_grid("2^-1:2^0:0.5") == [0.5, 2 ** -0.5, 1.0]
