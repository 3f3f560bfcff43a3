"""A small optax trainer that writes a checkpoint series, a metrics table and a resumable state.

``fit(model, data, ...)`` runs mini-batch training with a jit-compiled step: it builds a
``TrainConfig`` (how to train) from its keywords and runs ``train_loop``. With ``out_dir`` it
writes, at step 0, every ``save_every`` steps and at the end:

* ``step_{step:06d}.safetensors``: the parameters (``dynkit.save_checkpoint``, run info in
  ``meta``);
* ``metrics.csv``: the tidy history (``step, epoch, split, loss, accuracy``) so far;
* ``trainer_state.npz``: parameters, flattened optax state leaves, step and run info (no pickle).

The learning rate follows ``lr_schedule`` (``make_schedule``): constant, cosine, linear warm-up
then cosine, step (x0.1 at 50% and 75%) or linear decay. The schedule's step counter lives in
the optax state, so a resumed run continues mid-schedule.

Every file is replaced atomically (temporary file, then ``os.replace``) and
``trainer_state.npz`` is written last, so a run killed at any moment (SIGKILL, Ctrl-C) resumes
from its last complete save point. The data order depends only on ``(seed, epoch)``, so a
resumed run ends with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from tqdm.auto import tqdm

from dynkit.checkpoints.run import TRAINER_STATE
from dynkit.data import Dataset, load
from dynkit.errors import CheckpointError, InvalidArgumentError, ShapeMismatchError
from dynkit.evaluate import evaluate
from dynkit.io import atomic_write
from dynkit.losses import LOSSES, loss_fn
from dynkit.models.graph import Model, Params, merge_params, split_params
from dynkit.models.lr_scaling import lr_multipliers

__all__ = ["COLUMNS", "METRICS_FILE", "OPTIMIZERS", "RUN_DEFAULTS", "SCHEDULES", "STATE_FILE",
           "TrainConfig", "TrainResult", "fit", "make_optimizer", "make_schedule", "resolve_warmup",
           "train_loop", "training_objective"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "linear")
# run settings that state files written before they existed lack
RUN_DEFAULTS = {"lr_schedule": "constant", "warmup_steps": 0}
STATE_FILE = TRAINER_STATE  # load_run skips it
METRICS_FILE = "metrics.csv"
COLUMNS = ["step", "epoch", "split", "loss", "accuracy"]


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Final parameters, the tidy history (one row per step and split) and the output folder."""

    params: Params
    history: pd.DataFrame
    out_dir: Path | None


def resolve_warmup(name: str, warmup_steps: int | None, total_steps: int) -> int:
    """The number of warm-up steps ``W`` of schedule ``name`` over ``total_steps`` steps.

    ``None`` means ``total_steps // 20`` (5% of the run, as the 5 warm-up epochs of 90 in Goyal
    et al. 2017) for ``warmup_cosine`` and 0 for every other schedule; only ``warmup_cosine``
    warms up. A warm-up must be shorter than the run: ``0 <= W < total_steps``."""
    if name not in SCHEDULES:
        raise InvalidArgumentError(f"lr_schedule must be one of {SCHEDULES}, got {name!r}")
    if warmup_steps is None:
        return int(total_steps) // 20 if name == "warmup_cosine" else 0
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise InvalidArgumentError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if warmup_steps and name != "warmup_cosine":
        raise InvalidArgumentError(f"warmup_steps={warmup_steps} is used only by "
                                   f"lr_schedule='warmup_cosine', not {name!r}")
    if warmup_steps and warmup_steps >= total_steps:
        raise InvalidArgumentError(f"warmup_steps={warmup_steps} must be smaller than the "
                                   f"run's {total_steps} training steps")
    return int(warmup_steps)


def make_schedule(name: str, lr: float, total_steps: int,
                  warmup_steps: int | None = None) -> optax.ScalarOrSchedule:
    """The learning rate ``lr_t`` of update ``t = 0, ..., T-1`` (``T = total_steps``, ``t`` the
    number of updates already made, optax's ``count``), as an optax schedule.

    * ``constant``: ``lr_t = lr`` (returned as the float ``lr`` itself, so the optimizer is
      the plain constant-rate one);
    * ``cosine``: ``lr_t = lr (1 + cos(pi t / T)) / 2``, decay to 0 without restarts
      (SGDR, Loshchilov & Hutter 2017);
    * ``warmup_cosine``: ``lr_t = lr t / W`` for ``t < W``, then
      ``lr (1 + cos(pi (t - W) / (T - W))) / 2`` (linear warm-up, Goyal et al. 2017, then
      cosine); ``W`` is ``warmup_steps``, see ``resolve_warmup`` for its default;
    * ``step``: ``lr_t = lr 0.1^([t >= floor(T/2)] + [t >= floor(3T/4)])``, the classic
      ResNet schedule (He et al. 2016: x0.1 at 32k and 48k of 64k iterations);
    * ``linear``: ``lr_t = lr (1 - t / T)``, linear decay to 0 (a strong default, see
      Defazio et al. 2023, "When, why and how much? Adaptive learning rate scheduling by
      refinement").
    """
    warmup = resolve_warmup(name, warmup_steps, total_steps)
    if not lr > 0:
        raise InvalidArgumentError(f"lr must be > 0, got {lr}")
    lr, horizon = float(lr), max(int(total_steps), 1)  # a run of 0 steps never evaluates it
    if name == "constant":
        return lr
    if name == "cosine":
        schedule = optax.cosine_decay_schedule(lr, horizon)
    elif name == "warmup_cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, horizon)
    elif name == "step":
        schedule = optax.join_schedules(
            [optax.constant_schedule(lr), optax.constant_schedule(lr * 0.1),
             optax.constant_schedule(lr * 0.01)], [horizon // 2, 3 * horizon // 4])
    else:
        schedule = optax.linear_schedule(lr, 0.0, horizon)
    # optax's linear pieces give float32 for optax's int32 count; a float count gives rates in
    # the default float dtype (float64 with jax_enable_x64), exact for counts below 2**24
    return lambda count: schedule(jnp.asarray(count, float))


def make_optimizer(name: str, lr: optax.ScalarOrSchedule, momentum: float = 0.9,
                   weight_decay: float = 0.0,
                   multipliers: Params | None = None) -> optax.GradientTransformation:
    """The optax transformation for ``name``, acting on trainable parameters only.

    ``sgd``: ``p <- p - lr (g + wd p)``; ``momentum``: heavy ball ``m <- mu m + g + wd p``,
    ``p <- p - lr m`` (PyTorch's SGD with momentum); ``adam``: Adam (Kingma & Ba 2015) on
    ``g + wd p`` (coupled L2); ``adamw``: decoupled weight decay ``p <- p - lr (adam + wd p)``
    (Loshchilov & Hutter 2019). ``lr`` is a number or a schedule ``t -> lr_t``
    (``make_schedule``); with a schedule the decay term is scaled by ``lr_t`` too, as in
    PyTorch. ``multipliers`` (a pytree like the trained parameters, e.g.
    ``dynkit.models.lr_multipliers``) multiplies each leaf's update, i.e. gives leaf ``i`` the
    rate ``lr · multipliers[i]`` (decay included): the per-layer rates of μP / Depth-μP."""
    base = _base_optimizer(name, lr, momentum, weight_decay)
    if multipliers is None:
        return base
    return optax.chain(base, optax.stateless(
        lambda updates, params=None: jax.tree_util.tree_map(
            lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers)))


def _base_optimizer(name, lr, momentum, weight_decay) -> optax.GradientTransformation:
    if name not in OPTIMIZERS:
        raise InvalidArgumentError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    if not callable(lr) and not lr > 0:
        raise InvalidArgumentError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise InvalidArgumentError(f"weight_decay must be >= 0, got {weight_decay}")
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    base = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=momentum),
        "adam": lambda: optax.adam(lr),
    }[name]()
    return optax.chain(optax.add_decayed_weights(weight_decay), base)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the optimizer, its learning-rate schedule, the batches, the length, the
    loss, the seed and how often to save. Checked on construction (bad values are an
    ``InvalidArgumentError`` naming the setting); ``train_loop`` runs it.

    Args:
        optimizer: ``sgd``, ``momentum``, ``adam`` or ``adamw`` (``make_optimizer``).
        lr: the (peak) learning rate, ``> 0``.
        lr_schedule: ``constant``, ``cosine``, ``warmup_cosine``, ``step`` or ``linear``
            (``make_schedule``).
        warmup_steps: warm-up of ``warmup_cosine`` (default ``T // 20``, ``resolve_warmup``).
        schedule_steps: the schedule's horizon ``T`` (default: the run's number of steps).
        momentum: heavy-ball coefficient of ``momentum``.
        weight_decay: ``>= 0``, on every trained leaf (never on BatchNorm running statistics).
        batch_size: examples per step (at most the training set), ``>= 1``.
        epochs: the length in epochs of ``n_train // batch_size`` steps.
        steps: the length in steps (overrides ``epochs``).
        loss: ``cross_entropy`` or ``mse``.
        seed: parameters ``model.init(PRNGKey(seed))`` and data order ``(seed, epoch)``.
        save_every: record (and save) every ``save_every`` steps, besides step 0 and the end.
        lr_multipliers: apply the per-layer rates of the model's parameterization
            (``dynkit.models.lr_multipliers``: μP, Depth-μP), relative to ``base_width``.
        base_width: the width at which the μP multipliers are 1.

    Example:
        >>> TrainConfig(optimizer="adam", lr=1e-3, steps=100).lr_schedule
        'constant'
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    lr_schedule: str = "constant"
    warmup_steps: int | None = None
    schedule_steps: int | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int | None = 10
    steps: int | None = None
    loss: str = "cross_entropy"
    seed: int = 0
    save_every: int | None = None
    lr_multipliers: bool = False
    base_width: float = 1.0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise InvalidArgumentError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if int(self.batch_size) < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.save_every is not None and int(self.save_every) < 1:
            raise InvalidArgumentError(f"save_every must be >= 1 steps, got {self.save_every}")
        if self.steps is None and self.epochs is None:
            raise InvalidArgumentError("give the training length as epochs=... or steps=...")
        if self.lr_schedule not in SCHEDULES:
            raise InvalidArgumentError(f"lr_schedule must be one of {SCHEDULES}, "
                                       f"got {self.lr_schedule!r}")
        make_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)  # checks
        if not float(self.base_width) > 0:
            raise InvalidArgumentError(f"base_width must be > 0, got {self.base_width}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's number of steps: ``steps``, else ``epochs * steps_per_epoch``."""
        total = int(self.steps) if self.steps is not None else int(self.epochs) * steps_per_epoch
        if total < 0:
            raise InvalidArgumentError(f"the number of steps must be >= 0, got {total}")
        return total

    def horizon(self, total: int) -> int:
        """The schedule's horizon ``T``: ``schedule_steps``, at least the run's ``total``."""
        horizon = total if self.schedule_steps is None else self.schedule_steps
        if int(horizon) != horizon or horizon < total:
            raise InvalidArgumentError(f"schedule_steps must be an integer >= the run's {total} "
                                       f"steps, got {self.schedule_steps!r}")
        return int(horizon)


def fit(model: Model, data: Dataset | str, *, params: Params | None = None,
        out_dir: str | os.PathLike | None = None, progress: bool = True, resume: bool = True,
        **config) -> TrainResult:
    """Train ``model`` on ``data`` (a ``Dataset`` or a ``dynkit.data`` name) by mini-batch
    gradient descent: ``train_loop(model, data, TrainConfig(**config), ...)``; see the module
    docstring for the files written to ``out_dir``.

    ``config`` are the settings of ``TrainConfig`` (optimizer, lr, lr_schedule, warmup_steps,
    schedule_steps, momentum, weight_decay, batch_size, epochs, steps, loss, seed,
    save_every, lr_multipliers, base_width); the other arguments are those of ``train_loop``.

    Example:
        >>> import dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=64, n_test=16, num_classes=2, dim=3)
        >>> res = fit(dk.models.mlp(3, [8], 2), data, steps=4, batch_size=16, progress=False)
        >>> res.history["step"].unique().tolist()
        [0, 4]
    """
    return train_loop(model, data, TrainConfig(**config), params=params, out_dir=out_dir,
                      progress=progress, resume=resume)


def train_loop(model: Model, data: Dataset | str, config: TrainConfig, *,
               params: Params | None = None, out_dir: str | os.PathLike | None = None,
               progress: bool = True, resume: bool = True) -> TrainResult:
    """Run ``config`` (a ``TrainConfig``) on ``model`` and ``data``.

    Each step uses ``batch_size`` examples (``min(batch_size, n_train)``), the slice of the
    epoch's permutation ``default_rng((seed, epoch)).permutation(n_train)`` (the last partial
    batch of an epoch is dropped). ``steps`` overrides ``epochs``. Parameters start at
    ``params`` or ``model.init(PRNGKey(seed))``. BatchNorm models train with
    ``model.apply_train`` (running statistics updated, never decayed nor differentiated) and
    are evaluated with ``model.apply(train=False)`` (``dynkit.evaluate.evaluate``). ``loss``
    is ``cross_entropy`` or ``mse`` (``(1/2n) sum |f - y|^2``, one-hot targets for
    classification). ``weight_decay`` acts on every trained leaf (weights, biases, BatchNorm
    scale/bias, as PyTorch's default), never on running statistics; see ``make_optimizer``
    for the update rules. Train and test loss and accuracy (NaN for regression) are recorded
    at step 0, every ``save_every`` steps and at the end.

    The learning rate of update ``t`` is ``lr_t`` of ``make_schedule(lr_schedule, lr, T,
    warmup_steps)`` with ``T`` = ``schedule_steps`` (default: the run's total number of steps;
    give the final total to train a scheduled run in pieces of growing length): ``constant``
    (default), ``cosine`` (to 0 at ``T``), ``warmup_cosine`` (linear from 0 over
    ``warmup_steps``, default ``T // 20``, then cosine), ``step`` (x0.1 at ``T/2`` and
    ``3T/4``) or ``linear`` (to 0).

    With ``resume`` and an ``out_dir`` holding ``trainer_state.npz`` of the same run, training
    continues from its step (and from the same point of the schedule). The run's settings
    (optimizer, lr, lr_schedule, warmup_steps, ...) are saved with it and in every
    checkpoint's ``meta``; resuming with other settings is an ``InvalidArgumentError``. A
    constant-rate run may be resumed with more steps; a scheduled one needs the same total
    (``schedule_steps``), the horizon of its schedule.

    Args:
        model: the network.
        data: a ``Dataset`` or a ``dynkit.data`` name (loaded with ``seed``).
        config: the ``TrainConfig``.
        params: initial parameters (default ``model.init(PRNGKey(seed))``).
        out_dir: where to write checkpoints, ``metrics.csv`` and the resumable state.
        progress: show a progress bar.
        resume: continue the run found in ``out_dir`` (else refuse to overwrite it).

    Returns:
        ``TrainResult(params, history, out_dir)``.

    Example:
        >>> import dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=64, n_test=16, num_classes=2, dim=3)
        >>> config = TrainConfig(optimizer="adam", lr=1e-2, steps=6, batch_size=16, save_every=3)
        >>> res = train_loop(dk.models.mlp(3, [8], 2), data, config, progress=False)
        >>> res.history["step"].unique().tolist()
        [0, 3, 6]
    """
    c = config
    if isinstance(data, str):
        data = load(data, seed=c.seed)
    if c.loss == "cross_entropy" and data.task != "classification":
        raise InvalidArgumentError(f"loss='cross_entropy' needs a classification data set; "
                                   f"{data.name!r} is {data.task}: use loss='mse'")
    n = len(data.x_train)
    if n < 1:
        raise InvalidArgumentError(f"data set {data.name!r} has no training examples")
    bs = min(int(c.batch_size), n)
    per_epoch = n // bs
    total = c.total_steps(per_epoch)
    horizon = c.horizon(total)
    warmup = resolve_warmup(c.lr_schedule, c.warmup_steps, horizon)
    # the schedule's identity: a constant rate does not depend on the run's length
    schedule = ("constant", 0, 0) if c.lr_schedule == "constant" else (c.lr_schedule, horizon,
                                                                       warmup)
    scaling = (float(c.base_width),) if c.lr_multipliers else None
    opt = make_optimizer(c.optimizer, make_schedule(schedule[0], c.lr, *schedule[1:]),
                         c.momentum, c.weight_decay, _multipliers(model, c.optimizer, scaling))

    key = jax.random.PRNGKey(c.seed)
    # shapes and dtypes only: bad input fails before anything is compiled
    abstract = jax.eval_shape(model.init, key) if params is None else params
    dtype = jnp.result_type(*(leaf.dtype for leaf in jax.tree_util.tree_leaves(abstract)))
    _check_model_data(model, abstract, data, c.loss, dtype)
    run = _run_info(c, bs, warmup, horizon, data, model)

    out = Path(out_dir) if out_dir is not None else None
    start, rows = 0, []
    if out is not None and (out / STATE_FILE).exists():
        if not resume:
            raise InvalidArgumentError(
                f"{str(out)!r} already holds a training run ({STATE_FILE}); pass resume=True "
                "to continue it, or choose an empty out_dir")
        trainable, stats = split_params(abstract)
        start, trainable, stats, opt_state = _load_state(
            out / STATE_FILE, run, trainable, stats, jax.eval_shape(opt.init, trainable))
        if start > total:
            raise InvalidArgumentError(f"the run in {str(out)!r} is already at step {start}, "
                                       f"beyond the requested {total} steps")
        rows = _load_rows(out / METRICS_FILE, start)
    else:
        trainable, stats = split_params(model.init(key) if params is None else params)
        opt_state = opt.init(trainable)

    x_all = jnp.asarray(data.x_train, dtype)
    y_all = jnp.asarray(data.y_train, dtype if data.task == "regression" else None)
    step_fn = _make_step(model, c.optimizer, float(c.lr), schedule, float(c.momentum),
                         float(c.weight_decay), c.loss, data.num_classes, scaling)
    splits = {s: data.split(s) for s in ("train", "test")}
    points = {0, total} | (set(range(0, total, int(c.save_every))) if c.save_every else set())

    def save_point(step: int) -> None:
        p = merge_params(trainable, stats)
        epoch = step / per_epoch
        rows.extend(dict(step=step, epoch=epoch, **r) for r in evaluate(
            model, p, splits, loss=c.loss, num_classes=data.num_classes, dtype=dtype))
        if out is None:
            return
        from dynkit.checkpoints import save_checkpoint

        meta = {k: v for k, v in run.items() if k not in ("model", "n_train")}
        save_checkpoint(out / f"step_{step:06d}.safetensors", model, p, step=step,
                        meta=dict(meta, epoch=epoch))
        with atomic_write(out / METRICS_FILE, "w", newline="") as f:
            _history(rows).to_csv(f, index=False)
        _save_state(out / STATE_FILE, step, run, p, opt_state)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if start == 0 and not rows:
        save_point(0)
    with tqdm(total=total, initial=start, disable=not progress, desc=f"train {data.name}",
              unit="step") as bar:
        order_epoch, order = -1, None
        for step in range(start, total):
            epoch, i = divmod(step, per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, _epoch_order(c.seed, epoch, n)
            idx = order[i * bs:(i + 1) * bs]
            trainable, stats, opt_state, batch_loss = step_fn(trainable, stats, opt_state,
                                                              x_all, y_all, idx)
            bar.update(1)
            if step + 1 in points:
                save_point(step + 1)
                bar.set_postfix(loss=f"{float(batch_loss):.4g}")
    return TrainResult(merge_params(trainable, stats), _history(rows), out)


# --------------------------------------------------------------------- pieces
def _check_model_data(model: Model, params, data: Dataset, loss: str, dtype) -> None:
    if tuple(model.input_shape) != data.input_shape:
        raise ShapeMismatchError(f"model {model.arch!r} takes inputs of shape "
                                 f"{tuple(model.input_shape)} but data set {data.name!r} has "
                                 f"{data.input_shape}")
    x = jax.ShapeDtypeStruct((1, *data.input_shape), dtype)
    out_shape = jax.eval_shape(lambda p, xb: model.apply(p, xb), params, x).shape[1:]
    if data.task == "classification":
        want = (data.num_classes,) if loss == "cross_entropy" or out_shape != (1,) else (1,)
    else:
        want = data.y_train.shape[1:]
    if tuple(out_shape) != tuple(want):
        raise ShapeMismatchError(f"model {model.arch!r} outputs shape {tuple(out_shape)} per "
                                 f"example but data set {data.name!r} ({data.task}) needs "
                                 f"{tuple(want)}")


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


@functools.lru_cache(maxsize=16)
def training_objective(model: Model, loss_f):
    """``objective(trainable, stats, xb, yb) -> (loss, new_stats)``: the minibatch training
    loss of ``model`` (BatchNorm in train mode, its running statistics updated and cast back to
    their dtype); differentiate it with ``has_aux=True`` in ``trainable``."""
    def objective(trainable, stats, xb, yb):
        p = merge_params(trainable, stats)
        if model.has_batchnorm:
            logits, new = model.apply_train(p, xb)
            stats = jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype),
                                           split_params(new)[1], stats)
        else:
            logits = model.apply(p, xb)
        return loss_f(logits, yb), stats

    return objective


@functools.lru_cache(maxsize=16)
def _make_step(model: Model, optimizer: str, lr: float, schedule: tuple[str, int, int],
               momentum: float, weight_decay: float, loss: str, num_classes: int | None,
               scaling: tuple[float] | None = None):
    """The jit-compiled training step, cached so repeated ``fit`` calls with the same model
    and settings (resuming, sweeps over seeds) compile once. ``schedule`` is
    ``(name, total_steps, warmup_steps)`` for ``make_schedule``; ``scaling`` is ``None`` or
    ``(base_width,)`` for the per-layer rates."""
    name, total, warmup = schedule
    opt = make_optimizer(optimizer, make_schedule(name, lr, total, warmup), momentum,
                         weight_decay, _multipliers(model, optimizer, scaling))
    objective = training_objective(model, loss_fn(loss, num_classes))

    @jax.jit
    def step(trainable, stats, opt_state, x_all, y_all, idx):
        (value, stats), grads = jax.value_and_grad(objective, has_aux=True)(
            trainable, stats, x_all[idx], y_all[idx])
        updates, opt_state = opt.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), stats, opt_state, value

    return step


def _multipliers(model: Model, optimizer: str, scaling: tuple[float] | None):
    return None if scaling is None else lr_multipliers(model, optimizer, *scaling)


def _run_info(c: TrainConfig, bs: int, warmup: int, horizon: int, data: Dataset,
              model: Model) -> dict:
    """The run's settings, saved with its state and checkpoints and compared on resume."""
    run = {"optimizer": c.optimizer, "lr": float(c.lr), "lr_schedule": c.lr_schedule,
           "warmup_steps": warmup, "momentum": float(c.momentum),
           "weight_decay": float(c.weight_decay), "batch_size": bs, "seed": int(c.seed),
           "loss": c.loss, "data": data.name, "n_train": len(data.x_train),
           "model": json.loads(json.dumps(dict(model.config)))}
    if c.lr_schedule != "constant":
        run["schedule_steps"] = horizon
    if c.lr_multipliers:
        run["lr_multipliers"] = {"base_width": float(c.base_width)}
    return run


def _history(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"step": "int64", "epoch": "float64", "loss": "float64",
                      "accuracy": "float64"})


def _load_rows(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    df = pd.read_csv(path)
    return df[df["step"] <= upto][COLUMNS].to_dict("records")


# --------------------------------------------------------------------- resumable state
def _save_state(path: Path, step: int, run: dict, params: Params, opt_state) -> None:
    """``trainer_state.npz``: ``step``, ``run`` (JSON), ``params/<node>/<name>`` and the optax
    state leaves ``opt/<i>`` in ``jax.tree_util`` order."""
    arrays = {"step": np.asarray(step, np.int64), "run": np.asarray(json.dumps(run))}
    for node, entry in params.items():
        for k, v in entry.items():
            arrays[f"params/{node}/{k}"] = np.asarray(v)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
        arrays[f"opt/{i:05d}"] = np.asarray(leaf)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _load_state(path: Path, run: dict, trainable, stats, opt_state):
    """Restore ``(step, trainable, stats, opt_state)`` into the structure, shapes and dtypes of
    the given templates (arrays or ``jax.ShapeDtypeStruct``), checking the run matches ``run``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read trainer state {str(path)!r}: {exc}") from exc
    saved = {**RUN_DEFAULTS, **json.loads(str(arrays["run"]))}
    diff = {k: (saved.get(k), v) for k, v in run.items() if saved.get(k) != v}
    if diff:
        raise InvalidArgumentError(
            f"cannot resume {str(path.parent)!r}: the saved run differs in "
            + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items())
            + "; use the same settings, or another out_dir")

    def restore(tree, prefix):
        out = {}
        for node, entry in tree.items():
            out[node] = {}
            for k, v in entry.items():
                key = f"{prefix}/{node}/{k}"
                if key not in arrays or arrays[key].shape != v.shape:
                    raise CheckpointError(f"trainer state {str(path)!r} lacks {key} of shape "
                                          f"{v.shape}")
                out[node][k] = jnp.asarray(arrays[key], v.dtype)
        return out

    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    saved_leaves = [arrays.get(f"opt/{i:05d}") for i in range(len(leaves))]
    if any(s is None or s.shape != v.shape for s, v in zip(saved_leaves, leaves)):
        raise CheckpointError(f"trainer state {str(path)!r}: optimizer state does not match "
                              f"the {run['optimizer']!r} optimizer of this model")
    opt_state = jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(s, v.dtype) for s, v in zip(saved_leaves, leaves)])
    return (int(arrays["step"]), restore(trainable, "params"), restore(stats, "params"),
            opt_state)
