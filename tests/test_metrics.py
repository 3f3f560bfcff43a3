"""Built-in checkpoint metrics against independent numpy computations; the tidy schema, the
shared evaluator, one compilation per run, and the contract of every registered metric."""

import logging

import jax
import numpy as np
import pandas as pd
import pytest

import dynkit as dk
import dynkit.metrics as M
from dynkit.errors import InvalidArgumentError
from dynkit.evaluate import compiled_apply, evaluate, logits, score
from dynkit.losses import cross_entropy, loss_fn, mse
from dynkit.metrics import (
    check_tidy,
    compute_metrics,
    load_metrics,
    metrics_over_run,
    performance,
    weight_norms,
)
from dynkit.registry import Registry
from dynkit.schema import tidy
from dynkit.train import fit


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4))
    labels = rng.integers(0, 4, size=7)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -logp[np.arange(7), labels].mean()
    assert float(cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-12)


def test_mse_one_hot_matches_numpy():
    rng = np.random.default_rng(1)
    out = rng.normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    expected = 0.5 * np.mean(np.sum((out - np.eye(3)[labels]) ** 2, axis=1))
    assert float(mse(out, labels, num_classes=3)) == pytest.approx(expected, rel=1e-12)


def test_weight_norms_use_effective_weights():
    model = dk.models.mlp(6, [5], 3, parameterization="ntk", W_std=1.7)
    params = model.init(jax.random.PRNGKey(0), dtype=np.float64)
    df = weight_norms(model, params).set_index("layer")["value"]
    fc0 = 1.7 / np.sqrt(6) * np.asarray(params["fc0"]["w"])
    head = 1.7 / np.sqrt(5) * np.asarray(params["head"]["w"])
    assert df["fc0"] == pytest.approx(np.sqrt((fc0**2).sum()), rel=1e-12)
    assert df["total"] == pytest.approx(np.sqrt((fc0**2).sum() + (head**2).sum()), rel=1e-12)


# --------------------------------------------------------------------- tiny runs
def _tiny_data():
    """Three well-separated Gaussian classes in 4 dimensions, 48 train / 12 test points."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 4)) + 3.0 * np.eye(4)[y]
    return dk.data.from_arrays(x, y, test_fraction=0.2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 6-checkpoint run (steps 0..5, batch 16, 3 steps per epoch) of a tiny ReLU MLP."""
    out = tmp_path_factory.mktemp("tiny_run")
    data = _tiny_data()
    fit(dk.models.mlp(4, [8], 3), data, steps=5, batch_size=16, lr=0.1, save_every=1,
        out_dir=out, progress=False)
    return out, data


class _CompileLog(logging.Handler):
    """Counts jax's 'Finished XLA compilation' log records (``jax.log_compiles``)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.events: list[str] = []

    def emit(self, record):
        if "XLA compilation" in record.getMessage():
            self.events.append(record.getMessage())


def test_metrics_over_run_compiles_only_at_the_first_checkpoint(tiny_run):
    """Issue #12: a Model hashes by its graph, so every compiled program of ``ntk``,
    ``collapse``, ``pathnorm``, ``hessian`` and ``signal`` is reused: each checkpoint is loaded on its own (a fresh
    Model each time) and nothing compiles after the first one."""
    out, data = tiny_run
    load_metrics()
    log = _CompileLog()
    paths = list(dk.load_run(out).paths)
    assert len(paths) == 6

    def checkpoints():
        for i, path in enumerate(paths):
            log.events.append(f"checkpoint {i}")
            yield dk.load_checkpoint(path)

    logger = logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            table = metrics_over_run(checkpoints(), data,
                                     ["ntk", "collapse", "pathnorm", "hessian", "signal"],
                                     progress=False)
    finally:
        logger.removeHandler(log)
    second = log.events.index("checkpoint 1")
    assert log.events[second:] == [f"checkpoint {i}" for i in range(1, 6)]
    assert sorted(table["step"].unique()) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", load_metrics())
def test_every_registered_metric_gives_the_tidy_schema(tiny_run, name):
    """Contract: every registered metric, over a 3-checkpoint run, gives the tidy series
    schema with finite values, one block per checkpoint, and names its metrics."""
    out, data = tiny_run
    run = dk.load_run(out)[::2]  # steps 0, 2, 4
    table = metrics_over_run(run, data, [name], progress=False)
    check_tidy(table, finite=True)
    assert sorted(table["step"].unique()) == [0, 2, 4]
    np.testing.assert_allclose(table["epoch"], table["step"] / 3)  # 48 // 16 steps per epoch
    assert list(table.attrs["entries"]) == [name]
    assert set(table["metric"]) == set(table.attrs["entries"][name])


def test_registered_metrics_have_distinct_names(tiny_run):
    """The tidy table has no column naming the entry, so entries must not share metric names;
    ``attrs["entries"]`` maps each entry to its own."""
    out, data = tiny_run
    names = load_metrics()
    table = metrics_over_run(dk.load_run(out)[-1:], data, names, progress=False)
    produced = [m for ms in table.attrs["entries"].values() for m in ms]
    assert len(produced) == len(set(produced)) and set(produced) == set(table["metric"])
    assert list(table.attrs["entries"]) == names


def test_performance_matches_numpy(tiny_run):
    """``performance`` (the shared evaluator) against cross-entropy and accuracy in numpy."""
    out, data = tiny_run
    ckpt = dk.load_run(out).at(5)
    table = performance(ckpt.model, ckpt.params, data).set_index(["metric", "split"])["value"]
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test,
                                                                data.y_test)):
        z = np.asarray(ckpt.model.apply(ckpt.params, x), np.float64)
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        assert table["loss", split] == pytest.approx(-logp[np.arange(len(y)), y].mean(),
                                                     rel=1e-5)
        assert table["accuracy", split] == pytest.approx(np.mean(z.argmax(1) == y), rel=1e-6)


@pytest.mark.slow
def test_evaluator_chunks_and_cache():
    """Chunked, padded evaluation equals one forward pass; equal graphs share one program."""
    model = dk.models.mlp(5, [7], 3)
    params = model.init(jax.random.PRNGKey(1), dtype=np.float64)
    x = np.random.default_rng(2).normal(size=(11, 5))
    full = np.asarray(model.apply(params, x))
    np.testing.assert_allclose(logits(model, params, x, batch_size=4), full, rtol=1e-13)
    assert compiled_apply(model) is compiled_apply(dk.models.mlp(5, [7], 3))
    assert compiled_apply(model) is not compiled_apply(dk.models.mlp(5, [7], 2))
    y = np.array([0, 1, 2] * 3 + [0, 1])
    task_loss = loss_fn("mse", 3)
    rows = evaluate(model, params, {"a": (x, y), "b": (x[:3], y[:3])}, loss="mse",
                    num_classes=3, batch_size=4)
    ref = 0.5 * np.mean(np.sum((full - np.eye(3)[y]) ** 2, axis=1))
    assert [r["split"] for r in rows] == ["a", "b"]
    assert rows[0]["loss"] == pytest.approx(ref, rel=1e-12)
    assert rows[1]["loss"] == pytest.approx(float(task_loss(full[:3], y[:3])), rel=1e-12)
    assert rows[0]["accuracy"] == pytest.approx(np.mean(full.argmax(1) == y), rel=1e-6)
    assert np.isnan(score(full, x[:, :3], task_loss)[1])  # real targets: no accuracy
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        logits(model, params, x, batch_size=0)


# --------------------------------------------------------------------- schema
def test_tidy_orders_types_and_checks():
    rows = [{"value": 1, "metric": "a", "step": 3, "epoch": 0.5, "split": "train"},
            {"value": 2.5, "metric": "b", "step": 4, "epoch": float("nan"), "q": 2}]
    df = tidy(rows)
    assert list(df.columns) == ["step", "epoch", "metric", "value", "split", "q"]
    assert df["step"].dtype == np.int64 and df["value"].dtype == np.float64
    assert check_tidy(df, finite=True) is df  # a NaN epoch or q is allowed
    with pytest.raises(InvalidArgumentError, match=r"metric\(s\) \['b'\] are not finite"):
        check_tidy(df.assign(value=[1.0, np.inf]), finite=True)
    with pytest.raises(InvalidArgumentError, match="missing.*'epoch'"):
        tidy([{"step": 0, "metric": "a", "value": 1.0}])
    with pytest.raises(InvalidArgumentError, match="unknown.*'group'"):
        check_tidy(df.assign(group="x"))
    with pytest.raises(InvalidArgumentError, match="order"):
        check_tidy(df[["epoch", "step", "metric", "value"]])
    with pytest.raises(InvalidArgumentError, match="'step' must be integer"):
        check_tidy(df.astype({"step": float}))
    with pytest.raises(InvalidArgumentError, match="'split' must hold names"):
        check_tidy(df.assign(split=[1, 2]))


def test_compute_metrics_checks_what_metrics_return(monkeypatch):
    registry = Registry("metric", group="dynkit.tests.none")  # no entry points to load
    monkeypatch.setattr(M, "METRICS", registry)
    registry.register("no_value", "")(lambda m, p, d: pd.DataFrame({"metric": ["a"]}))
    registry.register("extra", "")(
        lambda m, p, d: pd.DataFrame({"metric": ["a"], "value": [1.0], "group": ["g"]}))
    registry.register("a1", "")(lambda m, p, d: pd.DataFrame({"metric": ["a"], "value": [1.0]}))
    registry.register("a2", "")(lambda m, p, d: pd.DataFrame({"metric": ["a"], "value": [2.0]}))
    with pytest.raises(InvalidArgumentError, match="'no_value' must return.*'value'"):
        compute_metrics(None, None, None, ["no_value"])
    with pytest.raises(InvalidArgumentError, match=r"'extra' returned columns \['group'\]"):
        compute_metrics(None, None, None, ["extra"])
    with pytest.raises(InvalidArgumentError, match=r"same metric name\(s\) \['a'\]"):
        compute_metrics(None, None, None, ["a1", "a2"])
    assert compute_metrics(None, None, None, ["a1"]).attrs["entries"] == {"a1": ["a"]}
