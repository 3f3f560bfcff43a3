"""Tests of dynkit.train.fit: learning, files, resume after SIGKILL / Ctrl-C, BatchNorm, decay."""

import functools
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import dynkit.data as D
import dynkit.train as T
from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models import GraphBuilder, mlp

# the run interrupted and resumed below; the subprocess script builds the same one
RUN = {"optimizer": "momentum", "lr": 0.05, "batch_size": 64, "steps": 30, "save_every": 10,
       "seed": 1, "progress": False}


@pytest.fixture(scope="module")
def digits():
    return D.load("digits")


SMALL_MLP = mlp(64, [32], 10)


def small_mlp():
    """One shared instance, so that fit's compiled step is reused across calls."""
    return SMALL_MLP


@functools.lru_cache
def init_params(seed):
    """``SMALL_MLP.init(PRNGKey(seed))``, what ``fit`` starts from by default, computed once."""
    return SMALL_MLP.init(jax.random.PRNGKey(seed))


def fit_small(data, **kw):
    return T.fit(SMALL_MLP, data, params=init_params(kw.get("seed", 0)), **kw)


def np_cross_entropy(logits, y):
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def assert_params_close(a, b, atol):
    assert a.keys() == b.keys()
    for n in a:
        assert a[n].keys() == b[n].keys()
        for k in a[n]:
            np.testing.assert_allclose(np.asarray(a[n][k]), np.asarray(b[n][k]), atol=atol,
                                       rtol=0, err_msg=f"{n}/{k}")


def test_mlp_learns_digits(digits):
    res = fit_small(digits, optimizer="momentum", lr=0.05, epochs=4, batch_size=64,
                progress=False)
    h = res.history
    assert list(h.columns) == ["step", "epoch", "split", "loss", "accuracy"]
    per_epoch = len(digits.x_train) // 64
    assert sorted(set(h["step"])) == [0, 4 * per_epoch]
    assert set(h["split"]) == {"train", "test"}
    train = h[h.split == "train"].set_index("step")
    assert train.loss.iloc[-1] < 0.5 * train.loss.iloc[0]
    assert train.accuracy.iloc[-1] > 0.9
    assert h.epoch.iloc[-1] == 4.0
    # the recorded numbers are the model's, recomputed independently
    logits = small_mlp().apply(res.params, jnp.asarray(digits.x_test))
    test_final = h[(h.split == "test") & (h.step == h.step.max())].iloc[0]
    np.testing.assert_allclose(test_final.loss, np_cross_entropy(logits, digits.y_test),
                               rtol=1e-5)
    np.testing.assert_allclose(test_final.accuracy,
                               np.mean(np.argmax(logits, 1) == digits.y_test))


def test_deterministic_given_seed(digits):
    kw = {**RUN, "steps": 5, "save_every": None, "params": init_params(1)}
    a = T.fit(small_mlp(), digits, **{**kw, "seed": 2}).params
    b = T.fit(small_mlp(), digits, **{**kw, "seed": 2}).params
    c = T.fit(small_mlp(), digits, **{**kw, "seed": 3}).params  # another data order
    assert_params_close(a, b, atol=0)
    assert not np.allclose(a["head"]["w"], c["head"]["w"])


def test_sgd_matches_numpy_softmax_regression():
    """A linear model trained by ``fit`` equals plain numpy SGD over ``Dataset.batches`` with
    seed ``(seed, epoch)`` (the documented data order), last partial batch dropped."""
    d = D.load("digits", dtype=np.float64)
    data = D.Dataset("sub", d.x_train[:100], d.y_train[:100], d.x_test[:10], d.y_test[:10], 10,
                     "classification")
    model = mlp(64, [], 10)
    p0 = model.init(jax.random.PRNGKey(0), jnp.float64)
    lr, seed = 0.2, 7
    res = T.fit(model, data, optimizer="sgd", lr=lr, batch_size=32, epochs=2, seed=seed,
                params=p0, progress=False)
    w, b = np.array(p0["head"]["w"]), np.array(p0["head"]["b"])
    for epoch in range(2):
        for xb, yb in data.batches("train", 32, seed=(seed, epoch), drop_last=True):
            z = xb @ w + b
            prob = np.exp(z - z.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            delta = (prob - np.eye(10)[yb]) / len(yb)
            w, b = w - lr * xb.T @ delta, b - lr * delta.sum(0)
    np.testing.assert_allclose(res.params["head"]["w"], w, atol=1e-12)
    np.testing.assert_allclose(res.params["head"]["b"], b, atol=1e-12)
    assert res.history.step.max() == 6


def test_regression_with_mse_and_adam():
    d = D.load("teacher_student", dim=8, n_train=256, n_test=64)
    res = T.fit(mlp(8, [32], 1), d, optimizer="adam", lr=1e-2, loss="mse", epochs=20,
                batch_size=64, progress=False, save_every=40)
    h = res.history
    assert h.accuracy.isna().all()
    assert sorted(set(h.step)) == [0, 40, 80]
    train = h[h.split == "train"]
    assert train.loss.iloc[-1] < 0.3 * train.loss.iloc[0]
    out = np.asarray(mlp(8, [32], 1).apply(res.params, jnp.asarray(d.x_train)))
    np.testing.assert_allclose(train.loss.iloc[-1], 0.5 * np.mean((out - d.y_train) ** 2),
                               rtol=1e-5)


def test_checkpoints_and_metrics_written(digits, tmp_path):
    from dynkit.checkpoints import load_checkpoint

    res = T.fit(small_mlp(), digits, **{**RUN, "steps": 25, "seed": 4}, out_dir=tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert names == ["metrics.csv", "step_000000.safetensors", "step_000010.safetensors",
                     "step_000020.safetensors", "step_000025.safetensors",
                     "trainer_state.npz"]
    csv = pd.read_csv(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(csv, res.history)
    assert len(csv) == 8  # 4 save points x 2 splits
    ck = load_checkpoint(tmp_path / "step_000025.safetensors")
    assert ck.step == 25
    assert ck.meta["optimizer"] == "momentum" and ck.meta["lr"] == 0.05 and ck.meta["seed"] == 4
    assert ck.meta["data"] == "digits"
    assert_params_close(ck.params, res.params, atol=0)
    first = load_checkpoint(tmp_path / "step_000000.safetensors")
    assert_params_close(first.params, init_params(4), atol=0)
    # metrics row at step 10 = the loss of the step-10 checkpoint
    p10 = load_checkpoint(tmp_path / "step_000010.safetensors").params
    logits = small_mlp().apply(p10, jnp.asarray(digits.x_train))
    row = csv[(csv.step == 10) & (csv.split == "train")].iloc[0]
    np.testing.assert_allclose(row.loss, np_cross_entropy(logits, digits.y_train), rtol=1e-5)


SCRIPT = textwrap.dedent("""
    import os, sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import dynkit.data as D, dynkit.train as T
    from dynkit.models import mlp
    out = sys.argv[1]
    real = T._save_state
    def slow_save_state(path, step, *args):
        if step == 20:   # checkpoint and metrics of step 20 are written, the state is not
            open(os.path.join(out, "ready"), "w").close()
            time.sleep(600)
        real(path, step, *args)
    T._save_state = slow_save_state
    T.fit(mlp(64, [32], 10), D.load("digits"), out_dir=out, **%r)
""")


def test_resume_after_sigkill_matches_uninterrupted_run(digits, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT % RUN, str(out)])
    try:
        deadline = time.monotonic() + 180
        while not (out / "ready").exists():
            assert proc.poll() is None, "training subprocess exited early"
            assert time.monotonic() < deadline, "training subprocess never reached step 20"
            time.sleep(0.05)
        assert (out / "step_000010.safetensors").exists()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    os.remove(out / "ready")
    with np.load(out / "trainer_state.npz") as f:
        assert int(f["step"]) == 10
    resumed = fit_small(digits, out_dir=out, **RUN)
    straight = fit_small(digits, **RUN)
    assert_params_close(resumed.params, straight.params, atol=1e-6)
    pd.testing.assert_frame_equal(resumed.history, straight.history, atol=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), straight.history,
                                  atol=1e-6)
    assert sorted(f for f in os.listdir(out) if f.startswith("step_")) == [
        f"step_{s:06d}.safetensors" for s in (0, 10, 20, 30)]
    # calling again on a finished run returns it without training
    again = fit_small(digits, out_dir=out, **RUN)
    assert_params_close(again.params, resumed.params, atol=0)


def test_keyboard_interrupt_leaves_consistent_files(digits, tmp_path, monkeypatch):
    real_savez = np.savez

    def interrupted_savez(f, **arrays):
        if int(arrays["step"]) == 20:  # Ctrl-C in the middle of writing the state
            f.write(b"partial")
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(T.np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        fit_small(digits, out_dir=tmp_path, **RUN)
    monkeypatch.undo()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files
    with np.load(tmp_path / "trainer_state.npz") as f:
        assert int(f["step"]) == 10
    assert set(pd.read_csv(tmp_path / "metrics.csv").step) == {0, 10, 20}
    resumed = fit_small(digits, out_dir=tmp_path, **RUN)
    straight = fit_small(digits, **RUN)
    assert_params_close(resumed.params, straight.params, atol=1e-6)
    assert list(resumed.history.step) == [0, 0, 10, 10, 20, 20, 30, 30]


def tiny_bn_model():
    g = GraphBuilder((8, 8, 1))
    h = g.conv("input", 8, 3, name="conv", bias=False, W_std=math.sqrt(2))
    h = g.batchnorm(h, name="bn")
    h = g.relu(h, name="relu", tap=True)
    h = g.pool(h, "avg", 2, name="pool")
    h = g.flatten(h, name="flatten")
    out = g.dense(h, 10, name="fc", role="readout")
    return g.build({"arch": "tiny_bn"}, out, h)


def test_batchnorm_model_trains_and_resumes(tmp_path):
    d = D.load("digits", image=True)
    model = tiny_bn_model()
    kw = {"optimizer": "momentum", "lr": 0.05, "batch_size": 64, "progress": False}
    res = T.fit(model, d, epochs=3, **kw)
    train = res.history[res.history.split == "train"]
    assert train.loss.iloc[-1] < 0.3 * train.loss.iloc[0]
    assert not np.allclose(res.params["bn"]["mean"], 0.0)  # running stats were updated
    # evaluation uses the running statistics (train=False)
    logits = model.apply(res.params, jnp.asarray(d.x_train), train=False)
    np.testing.assert_allclose(train.loss.iloc[-1], np_cross_entropy(logits, d.y_train),
                               rtol=1e-5)
    # stopped after 30 steps and continued: running stats and momentum come back exactly
    T.fit(model, d, steps=30, out_dir=tmp_path, **kw)
    resumed = T.fit(model, d, epochs=3, out_dir=tmp_path, **kw)
    assert_params_close(resumed.params, res.params, atol=1e-6)
    assert (tmp_path / "step_000030.safetensors").exists()


def test_weight_decay_excludes_batchnorm_stats():
    d = D.load("digits", image=True, dtype=np.float64)
    x, y = d.x_train[:48], d.y_train[:48]
    data = D.Dataset("sub", x, y, x[:8], y[:8], 10, "classification")
    model = tiny_bn_model()
    p0 = model.init(jax.random.PRNGKey(0), jnp.float64)
    lr, wd = 0.1, 0.5
    kw = {"lr": lr, "weight_decay": wd, "steps": 1, "batch_size": 48, "params": p0,
          "progress": False}
    after = {opt: T.fit(model, data, optimizer=opt, **kw).params for opt in ("sgd", "adamw")}

    # running stats after one full-batch step: 0.9 * init + 0.1 * batch moments of the conv
    # output (unbiased variance), with no decay
    conv = np.asarray(jax.jit(lambda p, xb: model.intermediates(p, xb, ["conv"])["conv"])(
        p0, jnp.asarray(x))).reshape(-1, 8)
    for params in after.values():
        np.testing.assert_allclose(params["bn"]["mean"], 0.1 * conv.mean(0), atol=1e-10)
        np.testing.assert_allclose(params["bn"]["var"], 0.9 + 0.1 * conv.var(0, ddof=1),
                                   atol=1e-10)

    # trained leaves, gradient from an independent jax.grad of the train-mode loss
    trained = {n: {k: v for k, v in e.items() if k not in ("mean", "var")}
               for n, e in p0.items()}

    def objective(tr):
        logits, _ = model.apply_train({n: {**p0[n], **tr[n]} for n in p0}, jnp.asarray(x))
        return jax_cross_entropy(logits, y)

    g = jax.jit(jax.grad(objective))(trained)
    for n, entry in trained.items():
        for k, v in entry.items():
            # SGD with coupled decay: p - lr (g + wd p)
            np.testing.assert_allclose(after["sgd"][n][k], v - lr * (g[n][k] + wd * v),
                                       atol=1e-10, err_msg=f"sgd {n}/{k}")
            # AdamW's first step (bias-corrected moments g and g^2, eps 1e-8), decoupled decay
            adam = g[n][k] / (jnp.abs(g[n][k]) + 1e-8)
            np.testing.assert_allclose(after["adamw"][n][k], v - lr * (adam + wd * v),
                                       atol=1e-10, err_msg=f"adamw {n}/{k}")


def jax_cross_entropy(logits, y):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(logp[jnp.arange(len(y)), y])


def test_errors(digits, tmp_path):
    reg = D.load("teacher_student", dim=64, n_train=20, n_test=5)
    with pytest.raises(InvalidArgumentError, match="cross_entropy.*use loss='mse'"):
        T.fit(mlp(64, [8], 1), reg, progress=False)
    with pytest.raises(ShapeMismatchError, match=r"inputs of shape \(10,\).*\(64,\)"):
        T.fit(mlp(10, [8], 10), digits, progress=False)
    with pytest.raises(ShapeMismatchError, match=r"outputs shape \(3,\)"):
        T.fit(mlp(64, [8], 3), digits, progress=False)
    with pytest.raises(InvalidArgumentError, match="optimizer must be one of"):
        fit_small(digits, optimizer="lbfgs", progress=False)
    with pytest.raises(InvalidArgumentError, match="loss must be one of"):
        fit_small(digits, loss="hinge", progress=False)
    short = {**RUN, "steps": 2}
    fit_small(digits, **short, out_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="resume=True"):
        fit_small(digits, **short, out_dir=tmp_path, resume=False)
    with pytest.raises(InvalidArgumentError, match=r"lr \(saved 0.05, now 0.2\)"):
        fit_small(digits, **{**short, "lr": 0.2}, out_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="already at step 2"):
        fit_small(digits, **{**short, "steps": 1}, out_dir=tmp_path)


def test_data_by_name_with_progress_bar(capsys):
    res = T.fit(mlp(2, [4], 2), "xor", steps=3, batch_size=16, progress=True)
    assert list(res.history.step) == [0, 0, 3, 3]
    assert "3/3" in capsys.readouterr().err
