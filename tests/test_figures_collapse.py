"""Neural-collapse figures (smoke + phenomenon) and ``collapse_series`` against direct calls."""

import numpy as np
import pytest

import dynkit as dk
from dynkit.analyses.collapse import collapse_of_model, neural_collapse, readout
from dynkit.analyses.collapse_series import collapse_series
from dynkit.errors import InvalidArgumentError
from dynkit.figures import nc_imbalanced
from dynkit.figures import neural_collapse as nc_fig
from dynkit.train import fit


# --------------------------------------------------------------------- collapse_series
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The trainer's run folder (checkpoints at steps 0, 10, 20, 30) of a small MLP on a
    Gaussian mixture, 4 steps per epoch."""
    data = dk.data.load("gaussian_mixture", seed=0, n_train=120, n_test=40, num_classes=3,
                        dim=5)
    out = tmp_path_factory.mktemp("run")
    fit(dk.models.mlp(5, [16], 3), data, steps=30, lr=0.1, batch_size=30, out_dir=out,
        save_every=10, progress=False)
    return out, data


def test_collapse_series_matches_direct_calls(trained_run):
    out, data = trained_run
    df = collapse_series(out, data.x_train, data.y_train)
    assert list(df.columns) == ["step", "epoch", "metric", "value"]
    assert sorted(df["step"].unique()) == [0, 10, 20, 30]
    for ckpt in dk.load_run(out):
        feats = np.asarray(ckpt.model.features(ckpt.params, data.x_train), dtype=np.float64)
        W, b = readout(ckpt.model, ckpt.params)
        ref = neural_collapse(feats, data.y_train, W=W, b=b)
        got = df[df["step"] == ckpt.step].set_index("metric")["value"]
        assert set(got.index) == set(ref)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
        assert (df[df["step"] == ckpt.step]["epoch"] == ckpt.step / 4).all()


def test_collapse_series_every_and_iterables(trained_run):
    out, data = trained_run
    run = dk.load_run(out)
    sub = collapse_series(run, data.x_train, data.y_train, every=2)
    assert sorted(sub["step"].unique()) == [0, 20, 30]  # the last checkpoint is always included
    sub = collapse_series(run, data.x_train, data.y_train, every=2, include_last=False)
    assert sorted(sub["step"].unique()) == [0, 20]
    ck = run.at(20)
    direct = collapse_of_model(ck.model, ck.params, data.x_train, data.y_train)
    from_list = collapse_series([ck], data.x_train, data.y_train, nc1_variant="pinv")
    assert from_list.set_index("metric")["value"]["nc1"] == pytest.approx(direct["nc1"], 1e-12)


def test_collapse_series_bad_input(trained_run):
    out, data = trained_run
    with pytest.raises(InvalidArgumentError, match="every"):
        collapse_series(out, data.x_train, data.y_train, every=0)
    with pytest.raises(InvalidArgumentError, match="no checkpoints"):
        collapse_series([], data.x_train, data.y_train)
    with pytest.raises(InvalidArgumentError, match="run must be"):  # argument renamed `run`
        collapse_series(3, data.x_train, data.y_train)


# --------------------------------------------------------------------- figures
def test_deep_linear_prediction_matches_ufm_closed_form_and_brute_force():
    from dynkit.analyses.collapse_imbalanced import ufm_imbalanced_norms

    counts, lam = [40, 10, 3], 0.02
    two = nc_imbalanced.deep_linear_norms(counts, lam, 2)
    ufm = ufm_imbalanced_norms(counts, lam, lam)
    np.testing.assert_allclose(two["w_norm"], ufm["w_norm"], atol=1e-8)
    np.testing.assert_allclose(two["mean_norm"], ufm["h_norm"], atol=1e-8)
    # depth 3: brute-force grid over s of the scalar objective
    N = sum(counts)
    three = nc_imbalanced.deep_linear_norms(counts, lam, 3)
    for k, n in enumerate(counts):
        s = np.linspace(0, np.sqrt(n), 400001)
        f = (s - np.sqrt(n)) ** 2 / (2 * N) + 1.5 * lam * s ** (2 / 3)
        assert three["w_norm"][k] ** 3 == pytest.approx(s[np.argmin(f)], abs=1e-4)


@pytest.mark.slow
def test_neural_collapse_figure(quick_figure):
    df = quick_figure(nc_fig)
    assert set(df["network"]) == {"MLP"}
    # zero train error at the end (the terminal phase), NC1 < 0.2 x its start, and NC1 keeps
    # falling (by > 30%) after zero training error
    result = nc_fig.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_nc_imbalanced_figure(quick_figure):
    df = quick_figure(nc_imbalanced)
    cls = df[df["kind"] == "class"]
    # alive norms match the prediction (1%); minority collapse: past λ = √n_k / N the smallest
    # class is predicted (and found) dead
    result = nc_imbalanced.claim(df)
    assert result.passed, result
    # the claimed trend: the classifier norm grows with the class count
    base = cls[(cls["experiment"] == "depth") & (cls["quantity"] == "w_norm")]
    for _, g in base.groupby("depth"):
        by_count = g.groupby("count")[["measured", "predicted"]].mean().sort_index()
        assert np.all(np.diff(by_count["measured"].to_numpy()) > 0)
        ratio = by_count.iloc[0] / by_count.iloc[-1]  # smallest / largest class
        assert ratio["predicted"] < 0.75
        assert ratio["measured"] == pytest.approx(ratio["predicted"], rel=1e-2)
    geo = df[df["kind"] == "geometry"]
    assert (geo["measured"].abs() < 1e-2).all()
