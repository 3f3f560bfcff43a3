"""layer_similarity, similarity_series, the `similarity` metric and `dynkit compare`."""

from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest

import dynkit as dk
from dynkit.analyses import similarity as sim
from dynkit.analyses import similarity_layers as sl
from dynkit.analyses.similarity_stream import minibatch_cka
from dynkit.cli import main
from dynkit.errors import CheckpointError, InvalidArgumentError
from dynkit.metrics import checkpoint_metrics
from dynkit.schema import check_tidy


@pytest.fixture(scope="module")
def nets():
    model = dk.models.mlp(5, [12, 10, 8], 3)
    x = np.random.default_rng(0).normal(size=(48, 5)).astype(np.float32)
    return model, model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1)), x


def direct(model, params, x):
    return {k: np.asarray(v) for k, v in model.intermediates(params, x).items()}


@pytest.mark.slow
def test_layer_similarity_equals_pairwise_measures(nets):
    model, pa, pb, x = nets
    A, B = direct(model, pa, x), direct(model, pb, x)
    names = model.layer_names()
    S = sl.layer_similarity(model, pa, model, pb, x, measure="minibatch_cka", batch_size=16)
    assert list(S.index) == names and list(S.columns) == names
    for a in names:
        for b in names:
            assert S.loc[a, b] == pytest.approx(minibatch_cka(A[a], B[b], batch_size=16),
                                                rel=1e-5)
    S = sl.layer_similarity(model, pa, model, pb, x, layers=(names[:1], names), measure="cka",
                            batch_size=20)
    assert S.shape == (1, 3)
    assert S.iloc[0, 2] == pytest.approx(sim.cka(A[names[0]], B[names[2]]), rel=1e-6)
    self_sim = sl.layer_similarity(model, pa, x=x, measure="svcca", batch_size=20)
    assert np.allclose(np.diag(self_sim), 1.0)
    assert self_sim.attrs["measure"] == "svcca"


def test_similarity_series_against_reference(nets):
    model, pa, pb, x = nets
    run = [SimpleNamespace(model=model, params=p, step=s, meta={"epoch": s / 10})
           for s, p in ((0, pa), (5, pb), (10, pa))]
    df = sl.similarity_series(run, x, measure="cka")
    check_tidy(df, finite=True)
    assert sorted(set(df.layer)) == sorted(model.layer_names())
    last, mid = df[df.step == 10], df[df.step == 5]
    assert np.allclose(last.value, 1.0) and np.allclose(df[df.step == 0].value, 1.0)
    A, B = direct(model, pa, x), direct(model, pb, x)
    for _, r in mid.iterrows():
        assert r.value == pytest.approx(sim.cka(B[r.layer], A[r.layer]), rel=1e-6)
    init = sl.similarity_series(run, x, reference=5, measure="minibatch_cka", batch_size=16)
    assert np.allclose(init[init.step == 5].value, 1.0)
    assert set(init.metric) == {"minibatch_cka"}
    with pytest.raises(InvalidArgumentError, match="no checkpoint at step 7"):
        sl.similarity_series(run, x, reference=7)
    with pytest.raises(InvalidArgumentError, match="measure must be one of"):
        sl.similarity_series(run, x, measure="nope")


def test_similarity_metric_registered(nets):
    model, pa, _, _ = nets
    data = dk.data.load("gaussian_mixture", n_train=16, n_test=40, num_classes=3, dim=5)
    ckpt = dk.Checkpoint(model, pa, 3, None, None)
    table = checkpoint_metrics(ckpt, data, ["similarity"])
    assert table.layer.tolist() == ["act0|act1", "act0|act2", "act0|head", "act1|act2",
                                    "act1|head", "act2|head"]
    assert ((table.value > 0) & (table.value <= 1 + 1e-9)).all()


@pytest.mark.slow
def test_cli_compare(tmp_path, capsys):
    model = dk.models.mlp(64, [16, 16], 10)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    dk.save_checkpoint(a, model, model.init(jax.random.PRNGKey(0)), step=1)
    dk.save_checkpoint(b, model, model.init(jax.random.PRNGKey(1)), step=1)
    assert main(["compare", str(a), str(a), "--measure", "cka", "--max-inputs", "100",
                 "--out", str(tmp_path / "o")]) == 0
    table = pd.read_csv(tmp_path / "o" / "cka.csv").set_index("layer_a")
    assert np.allclose(np.diag(table.to_numpy()), 1.0)
    assert main(["compare", str(a), str(b), "--measure", "svcca", "--max-inputs", "100",
                 "--out", str(tmp_path / "o")]) == 0
    assert "svcca" in capsys.readouterr().out
    assert main(["compare", str(a), str(tmp_path / "missing.safetensors")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        dk.load_checkpoint(tmp_path / "missing.safetensors")


# --------------------------------------------------------------------- re-initialization
@pytest.mark.slow
def test_reinit_robustness_against_direct_evaluation(nets):
    from dynkit.analyses.reinit import reinit_robustness

    model, pa, pb, x = nets
    y = np.arange(len(x)) % 3
    p_mid = model.init(jax.random.PRNGKey(2))
    run = [SimpleNamespace(model=model, params=p, step=s, meta={})
           for s, p in ((0, pa), (5, p_mid), (10, pb))]
    df = reinit_robustness(run, (x, y), to=["init", 5, 10, "random"], seed=3)
    assert set(df.reinit_step) == {0, 5, 10, -1} and set(df.step) == {10}

    def ce(params):
        z = np.asarray(model.apply(params, x), np.float64)
        z -= z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))

    def value(layer, tau, metric="loss"):
        sel = df[(df.layer == layer) & (df.reinit_step == tau) & (df.metric == metric)]
        return float(sel.value.iloc[0])

    assert value("none", 10) == pytest.approx(ce(pb), rel=1e-5)
    for layer in ("fc0", "fc1", "head"):
        assert value(layer, 0) == pytest.approx(ce({**pb, layer: pa[layer]}), rel=1e-5)
        assert value(layer, 5) == pytest.approx(ce({**pb, layer: p_mid[layer]}), rel=1e-5)
        assert value(layer, 10) == pytest.approx(ce(pb), rel=1e-5)  # reset to itself
        fresh = model.init(jax.random.PRNGKey(3))
        assert value(layer, -1) == pytest.approx(ce({**pb, layer: fresh[layer]}), rel=1e-5)
    assert value("fc0", 0, "error") == pytest.approx(1 - value("fc0", 0, "accuracy"))
    with pytest.raises(InvalidArgumentError, match="no checkpoint at step 7"):
        reinit_robustness(run, (x, y), to=7)
    with pytest.raises(InvalidArgumentError, match="only to='random'"):
        reinit_robustness(run[-1], (x, y), to="init")
    with pytest.raises(InvalidArgumentError, match="hold no parameters"):
        reinit_robustness(run, (x, y), layers=["act0"])


def test_layers_tuple_of_names_is_one_list(nets):
    model, pa, pb, x = nets
    S = sl.layer_similarity(model, pa, model, pb, x, layers=("act0", "act2"), batch_size=16)
    assert list(S.index) == ["act0", "act2"] and list(S.columns) == ["act0", "act2"]
    with pytest.raises(InvalidArgumentError, match="unknown layer"):
        sl.layer_similarity(model, pa, x=x, layers=["nope"])


@pytest.mark.slow
def test_similarity_series_on_a_run_folder(tmp_path, nets):
    model, pa, pb, x = nets
    for s, p in ((0, pa), (5, pb), (10, pa)):
        dk.save_checkpoint(tmp_path / f"step_{s}.safetensors", model, p, step=s)
    df = sl.similarity_series(str(tmp_path), x, reference=5, every=2, measure="procrustes")
    assert sorted(set(df.step)) == [0, 10]  # every=2 skips step 5, the reference
    assert (df.value > 1e-3).all()


def test_errors_name_the_layers(nets):
    model, pa, _, x = nets
    dead = {**pa, "fc1": {"w": pa["fc1"]["w"] * 0, "b": pa["fc1"]["b"] * 0}}  # act1 constant
    with pytest.raises(InvalidArgumentError, match="A:act1"):
        sl.layer_similarity(model, dead, x=x, batch_size=16)
    with pytest.raises(InvalidArgumentError, match="act1.*constant"):
        sl.layer_similarity(model, dead, x=x, measure="cka", batch_size=16)
