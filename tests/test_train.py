"""Tests of dynkit.train.fit: learning, files, resume after SIGKILL / Ctrl-C, BatchNorm, decay."""

import functools
import json
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------- learning-rate schedules
def closed_form_lr(name, lr, t, total, warmup):
    """``lr_t`` of update ``t`` (0-based) written out from the formulas of ``make_schedule``."""
    if name == "constant":
        return lr
    if name == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * t / total))
    if name == "warmup_cosine":
        if t < warmup:
            return lr * t / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
    if name == "step":
        return lr * 0.1 ** ((t >= total // 2) + (t >= 3 * total // 4))
    assert name == "linear"
    return lr * (1 - t / total)


def np_softmax_regression_grad(w, b, x, y):
    """Gradient of the mean cross-entropy of ``softmax(x w + b)``, in numpy."""
    z = x @ w + b
    prob = np.exp(z - z.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    delta = (prob - np.eye(w.shape[1])[y]) / len(y)
    return x.T @ delta, delta.sum(0)


@pytest.mark.parametrize("name,warmup,expected_warmup", [
    ("constant", None, 0), ("cosine", None, 0), ("warmup_cosine", None, 1),
    ("warmup_cosine", 5, 5), ("step", None, 0), ("linear", None, 0)])
@pytest.mark.slow
def test_schedule_steps_are_lr_t_times_gradient(tmp_path, name, warmup, expected_warmup):
    """Full-batch SGD on softmax regression, a checkpoint after every step: each update is
    ``-lr_t * grad`` with the gradient from numpy and ``lr_t`` from the closed form."""
    from dynkit.checkpoints import load_checkpoint

    d = D.load("digits", dtype=np.float64)
    data = D.Dataset("sub", d.x_train[:40], d.y_train[:40], d.x_test[:4], d.y_test[:4], 10,
                     "classification")
    model = mlp(64, [], 10)
    lr, total = 0.5, 20
    T.fit(model, data, optimizer="sgd", lr=lr, lr_schedule=name, warmup_steps=warmup,
          steps=total, batch_size=40, save_every=1, params=init_params_f64(model, 0),
          out_dir=tmp_path, progress=False)
    ckpts = [load_checkpoint(tmp_path / f"step_{t:06d}.safetensors") for t in range(total + 1)]
    meta = ckpts[-1].meta
    assert meta["lr_schedule"] == name and meta["warmup_steps"] == expected_warmup
    assert meta.get("schedule_steps") == (None if name == "constant" else total)
    rates = []
    for t in range(total):
        w, b = (np.asarray(ckpts[t].params["head"][k]) for k in ("w", "b"))
        gw, gb = np_softmax_regression_grad(w, b, data.x_train, data.y_train)
        rate = closed_form_lr(name, lr, t, total, expected_warmup)
        np.testing.assert_allclose(ckpts[t + 1].params["head"]["w"], w - rate * gw, atol=1e-12,
                                   rtol=0, err_msg=f"{name} step {t}")
        np.testing.assert_allclose(ckpts[t + 1].params["head"]["b"], b - rate * gb, atol=1e-12,
                                   rtol=0, err_msg=f"{name} step {t}")
        rates.append(rate)
    # the schedule's shape, from the closed form: start, end and monotonicity
    assert rates[0] == (0.0 if expected_warmup else lr)
    if name != "constant":
        assert rates[-1] < 0.06 * lr and max(rates) == pytest.approx(lr)


@functools.lru_cache
def init_params_f64(model, seed):
    return model.init(jax.random.PRNGKey(seed), jnp.float64)


@pytest.fixture(scope="module")
def digits64():
    return D.load("digits", dtype=np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("name,warmup", [("warmup_cosine", 12), ("step", None)])
def test_resume_mid_schedule_is_exact(digits64, tmp_path, monkeypatch, name, warmup):
    """Interrupted while saving step 20 (state of step 10 kept), resumed: the schedule goes on
    from step 10 (through the warm-up end at 12 or the drops at 15 and 22), float64-exact."""
    kw = {**RUN, "lr_schedule": name, "warmup_steps": warmup,
          "params": init_params_f64(SMALL_MLP, 1)}
    real_savez = np.savez

    def interrupted_savez(f, **arrays):
        if int(arrays["step"]) == 20:
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(T.np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        T.fit(SMALL_MLP, digits64, out_dir=tmp_path, **kw)
    monkeypatch.undo()
    with np.load(tmp_path / "trainer_state.npz") as f:
        assert int(f["step"]) == 10
    resumed = T.fit(SMALL_MLP, digits64, out_dir=tmp_path, **kw)
    straight = T.fit(SMALL_MLP, digits64, **kw)
    assert_params_close(resumed.params, straight.params, atol=0)
    pd.testing.assert_frame_equal(resumed.history, straight.history, rtol=0, atol=0)
    # the schedule mattered: the constant-rate run ends elsewhere
    constant = T.fit(SMALL_MLP, digits64, **{**kw, "lr_schedule": "constant",
                                             "warmup_steps": None})
    assert np.abs(np.asarray(constant.params["head"]["w"]
                             - straight.params["head"]["w"])).max() > 1e-3


@pytest.mark.slow
def test_scheduled_run_in_pieces_with_schedule_steps(digits64, tmp_path):
    """``schedule_steps`` fixes the schedule's horizon, so a scheduled run trained in pieces of
    growing length (resumed each time) equals one uninterrupted run, float64-exact."""
    kw = {**RUN, "lr_schedule": "step", "params": init_params_f64(SMALL_MLP, 1)}
    total = kw.pop("steps")
    for steps in (7, 16, total):
        pieces = T.fit(SMALL_MLP, digits64, out_dir=tmp_path, steps=steps,
                       schedule_steps=total, **kw)
    straight = T.fit(SMALL_MLP, digits64, steps=total, **kw)
    assert_params_close(pieces.params, straight.params, atol=0)
    with pytest.raises(InvalidArgumentError, match="schedule_steps must be an integer >= the "
                                                   "run's 30 steps, got 20"):
        T.fit(SMALL_MLP, digits64, steps=30, schedule_steps=20, **kw)


def test_schedule_errors(digits, tmp_path):
    with pytest.raises(InvalidArgumentError, match="lr_schedule must be one of.*'exp'"):
        fit_small(digits, lr_schedule="exp", steps=2, progress=False)
    with pytest.raises(InvalidArgumentError, match="warmup_steps must be an integer >= 0, got -1"):
        fit_small(digits, lr_schedule="warmup_cosine", warmup_steps=-1, steps=2, progress=False)
    with pytest.raises(InvalidArgumentError, match="warmup_steps=5 must be smaller than the "
                                                   "run's 5 training steps"):
        fit_small(digits, lr_schedule="warmup_cosine", warmup_steps=5, steps=5, progress=False)
    with pytest.raises(InvalidArgumentError, match="warmup_steps=2 is used only by "
                                                   "lr_schedule='warmup_cosine', not 'cosine'"):
        fit_small(digits, lr_schedule="cosine", warmup_steps=2, steps=5, progress=False)
    with pytest.raises(InvalidArgumentError, match="lr must be > 0"):
        fit_small(digits, lr=0.0, lr_schedule="cosine", steps=5, progress=False)
    # resuming with another schedule, warm-up or horizon is refused, naming the setting
    short = {**RUN, "steps": 2, "lr_schedule": "cosine"}
    fit_small(digits, **short, out_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"lr_schedule \(saved 'cosine', now 'step'\)"):
        fit_small(digits, **{**short, "lr_schedule": "step"}, out_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"lr_schedule \(saved 'cosine', now 'const"):
        fit_small(digits, **{**short, "lr_schedule": "constant"}, out_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"schedule_steps \(saved 2, now 4\)"):
        fit_small(digits, **{**short, "steps": 4}, out_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"warmup_steps \(saved 0, now 1\)"):
        fit_small(digits, **{**short, "lr_schedule": "warmup_cosine", "warmup_steps": 1},
                  out_dir=tmp_path)


def test_resume_state_saved_before_schedules_existed(digits, tmp_path):
    """A ``trainer_state.npz`` whose run info lacks the schedule keys is a constant-rate run."""
    kw = {**RUN, "steps": 2}
    fit_small(digits, **kw, out_dir=tmp_path)
    path = tmp_path / "trainer_state.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    old = {k: v for k, v in json.loads(str(arrays["run"])).items()
           if k not in ("lr_schedule", "warmup_steps")}
    np.savez(path, **{**arrays, "run": np.asarray(json.dumps(old))})
    resumed = fit_small(digits, **{**kw, "steps": 4}, out_dir=tmp_path)
    assert_params_close(resumed.params, fit_small(digits, **{**kw, "steps": 4}).params,
                        atol=1e-6)
    with pytest.raises(InvalidArgumentError, match=r"lr_schedule \(saved 'constant', now 'cos"):
        fit_small(digits, **{**kw, "steps": 4, "lr_schedule": "cosine"}, out_dir=tmp_path)


def test_cli_train_lr_schedule(tmp_path, capsys):
    from dynkit.checkpoints import load_checkpoint
    from dynkit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--widths", "8", "--epochs", "2", "--batch-size", "256",
                 "--lr-schedule", "warmup_cosine", "--warmup-steps", "2", "--out", str(out),
                 "--quiet"]) == 0
    per_epoch = len(D.load("digits").x_train) // 256
    last = load_checkpoint(out / f"step_{2 * per_epoch:06d}.safetensors")
    assert last.meta["lr_schedule"] == "warmup_cosine" and last.meta["warmup_steps"] == 2
    assert last.meta["schedule_steps"] == 2 * per_epoch
    capsys.readouterr()
    assert main(["train", "--widths", "8", "--epochs", "1", "--batch-size", "256",
                 "--lr-schedule", "warmup_cosine", "--warmup-steps", str(per_epoch),
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynkit: error:") and "warmup_steps" in err
    with pytest.raises(SystemExit):
        main(["train", "--lr-schedule", "exp"])
    assert "invalid choice: 'exp'" in capsys.readouterr().err


def test_fit_is_train_loop_of_a_train_config(digits, tmp_path):
    """``fit(model, data, **settings)`` = ``train_loop(model, data, TrainConfig(**settings))``
    exactly; the history is the shared evaluator's loss and accuracy (numpy check)."""
    settings = {k: v for k, v in RUN.items() if k != "progress"}
    config = T.TrainConfig(**settings)
    looped = T.train_loop(SMALL_MLP, digits, config, params=init_params(1), progress=False,
                          out_dir=tmp_path)
    fitted = fit_small(digits, **RUN)
    assert_params_close(looped.params, fitted.params, atol=0)
    pd.testing.assert_frame_equal(looped.history, fitted.history, rtol=0, atol=0)
    final = looped.history[looped.history["step"] == 30].set_index("split")
    logits = SMALL_MLP.apply(looped.params, digits.x_test)
    assert final.loc["test", "loss"] == pytest.approx(np_cross_entropy(logits, digits.y_test),
                                                      rel=1e-5)
    assert json.loads(json.dumps(config.__dict__)) == {**T.TrainConfig().__dict__, **settings}
    with pytest.raises(AttributeError):
        config.lr = 1.0  # frozen
    with pytest.raises(TypeError, match="learning_rate"):
        fit_small(digits, learning_rate=0.1)


@pytest.mark.parametrize("bad,match", [
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"save_every": 0}, "save_every must be >= 1 steps, got 0"),
    ({"epochs": None}, "give the training length as epochs=... or steps=..."),
    ({"lr_schedule": "exp"}, "lr_schedule must be one of"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
])
def test_train_config_checks_its_settings(bad, match):
    with pytest.raises(InvalidArgumentError, match=match):
        T.TrainConfig(**bad)


def test_repeated_fits_compile_nothing_new(digits):
    """fit's jitted step is cached by (model graph, optimizer settings): a second fit of an
    equal model, from other parameters, another seed and another length, compiles nothing
    (instability sweeps, lr sweeps and resumes call fit many times)."""
    import logging

    events = []

    class Log(logging.Handler):
        def emit(self, record):
            if "XLA compilation" in record.getMessage():
                events.append(record.getMessage())

    first = T.fit(mlp(64, [24], 10), digits, optimizer="sgd", lr=0.05, batch_size=32,
                  steps=3, progress=False)
    logger, log = logging.getLogger("jax"), Log(logging.DEBUG)
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            T.fit(mlp(64, [24], 10), digits, params=first.params, optimizer="sgd", lr=0.05,
                  batch_size=32, steps=5, seed=3, progress=False)
    finally:
        logger.removeHandler(log)
    assert events == []
