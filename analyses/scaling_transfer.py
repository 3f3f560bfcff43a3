"""Learning-rate transfer sweeps: final loss vs log2 lr per width (or depth), and the optimum.

``lr_transfer(build, sizes, lrs, data, steps, seeds)`` trains ``build(size)`` for every cell
``(size, lr, seed)`` and returns the tidy table behind every transfer plot (Yang et al. 2022,
"Tensor Programs V: tuning large neural networks via zero-shot hyperparameter transfer", Fig. 1;
Bordelon et al. 2023, "Depthwise hyperparameter transfer in residual networks"). Under a
parametrization with transfer (muP in width, Depth-muP in depth) the optimal ``log2 lr``
stays put as the size grows; under the standard one it drifts.

All cells of one size share shapes, so they train together: one ``jax.vmap`` over the
``(lr, seed)`` cells of a ``jax.lax.scan`` over the steps. The training is ``fit``'s (same
initialization ``model.init(PRNGKey(seed))``, same batch order ``default_rng((seed,
epoch)).permutation``, same optax update, constant rate), which the tests check cell by cell.
Every optimizer of ``dynkit.train`` is linear in the rate, ``update(lr) = lr * update(1)``,
which is what lets the rate be a vmapped array.

With ``out`` every cell is its own run folder, ``out/<axis>_<size>/log2lr_<e>/seed_<s>/``,
holding the final ``step_<T>.safetensors`` (``dynkit.save_checkpoint``), ``cell.json`` (the
cell's settings) and, written last, ``metrics.csv`` in ``fit``'s schema (step, epoch, split,
loss, accuracy at steps 0 and T). A cell with its ``metrics.csv`` is done; an interrupted sweep
re-run with the same arguments trains only the missing cells.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from tqdm.auto import tqdm

from dynkit.checkpoints import save_checkpoint
from dynkit.data import Dataset
from dynkit.errors import InvalidArgumentError
from dynkit.io import atomic_write
from dynkit.losses import LOSSES, loss_fn
from dynkit.models.graph import Model, merge_params, split_params
from dynkit.models.lr_scaling import lr_multipliers as lr_multipliers_of
from dynkit.train import COLUMNS, METRICS_FILE, OPTIMIZERS, make_optimizer, training_objective

__all__ = ["CELL_FILE", "cell_dir", "lr_grid", "lr_transfer", "optimal_lr", "optimum_spread"]

CELL_FILE = "cell.json"
AXES = ("width", "depth")


def lr_grid(text: str) -> list[float]:
    """Learning rates from text: ``"2^-8:2^0"`` (powers of two, exponent step 1),
    ``"2^-8:2^0:0.5"`` (exponent step 0.5) or a comma list ``"0.1,0.01"``.

    Example:
        >>> lr_grid("2^-2:2^0")
        [0.25, 0.5, 1.0]
        >>> lr_grid("0.1,0.3")
        [0.1, 0.3]
    """
    text = str(text).replace(" ", "")
    m = re.fullmatch(r"2\^(-?\d+(?:\.\d+)?):2\^(-?\d+(?:\.\d+)?)(?::(\d+(?:\.\d+)?))?", text)
    if m:
        lo, hi = float(m[1]), float(m[2])
        step = float(m[3]) if m[3] else 1.0
        if hi < lo or step <= 0:
            raise InvalidArgumentError(f"lr range {text!r}: need 2^lo:2^hi[:step] with lo <= hi "
                                       "and step > 0, e.g. 2^-8:2^0")
        n = math.floor((hi - lo) / step + 1e-9) + 1
        return [float(2.0 ** (lo + i * step)) for i in range(n)]
    try:
        lrs = [float(t) for t in text.split(",")]
    except ValueError:
        raise InvalidArgumentError(f"malformed lr range {text!r}: write 2^-8:2^0 (powers of "
                                   "two), 2^-8:2^0:0.5 (exponent step) or 0.1,0.01,...") from None
    _check_lrs(lrs)
    return lrs


def _check_lrs(lrs) -> None:
    if not len(lrs) or not all(np.isfinite(lr) and lr > 0 for lr in lrs):
        raise InvalidArgumentError(f"lrs must be a non-empty list of positive finite rates, "
                                   f"got {list(lrs)!r}")


def cell_dir(out, axis: str, size: int, lr: float, seed: int) -> Path:
    """The run folder of cell ``(size, lr, seed)``: ``out/<axis>_<size>/log2lr_<e>/seed_<s>``.

    Example:
        >>> cell_dir("sw", "width", 64, 0.25, 1).as_posix()
        'sw/width_64/log2lr_-2.000/seed_1'
    """
    return Path(out) / f"{axis}_{int(size)}" / f"log2lr_{math.log2(lr):+.3f}".replace(
        "+", "") / f"seed_{int(seed)}"


def lr_transfer(build: Callable[[int], Model], sizes: Sequence[int], lrs: Sequence[float],
                data: Dataset, steps: int, seeds: Sequence[int] = (0,), *,
                out: str | os.PathLike | None = None, axis: str = "width",
                optimizer: str = "sgd", batch_size: int = 64, loss: str = "cross_entropy",
                momentum: float = 0.9, weight_decay: float = 0.0,
                lr_multipliers: bool = False, base_width: float = 1.0,
                progress: bool = True, client=None) -> pd.DataFrame:
    """Train ``build(size)`` at every learning rate and seed for ``steps`` steps; the final loss
    per cell.

    Each cell is ``dynkit.train.fit(build(size), data, optimizer=optimizer, lr=lr, seed=seed,
    steps=steps, batch_size=batch_size, loss=loss, lr_multipliers=lr_multipliers,
    base_width=base_width)`` (constant rate); the cells of one size run
    as one vmapped program. A cell whose loss is NaN or infinite is recorded with
    ``diverged=True`` (its loss stays NaN/inf), never an error.

    Args:
        build: ``size -> Model``, e.g. ``lambda n: dk.models.mlp(64, [n, n], 10,
            parameterization="mup")``.
        sizes: strictly increasing widths (or depths).
        lrs: positive learning rates.
        data: the ``Dataset``.
        steps: training steps per cell.
        seeds: initialization and batch-order seeds.
        out: sweep folder (one run folder per cell, resumable); ``None`` keeps it in memory.
        axis: ``"width"`` or ``"depth"``, the name of the size column and of the folders.
        optimizer, batch_size, loss, momentum, weight_decay: as in ``fit``.
        lr_multipliers, base_width: the per-layer rates of μP / Depth-μP, as in ``fit``
            (``dynkit.models.lr_multipliers``).
        progress: a progress bar over the cells.
        client: a ``dask.distributed.Client``: each size (its vmapped group of cells) is one
            Dask task, whose worker reads and writes its cells under ``out`` (which the
            workers must see) and returns their metrics; ``build`` must be picklable
            (cloudpickle: lambdas are). ``None``: one size after another, here.

    Returns:
        Tidy DataFrame, one row per cell: ``<axis>, lr, log2_lr, seed, loss, test_loss,
        accuracy, test_accuracy, diverged`` (final values, full train/test sets), sorted.

    References:
        Yang et al. 2022 (Tensor Programs V); Bordelon et al. 2023; Yang et al. 2023 (Tensor
        Programs VI).

    Example:
        >>> import dynkit as dk
        >>> d = dk.data.load("gaussian_mixture", n_train=32, n_test=8, num_classes=2, dim=3)
        >>> df = lr_transfer(lambda n: dk.models.mlp(3, [n], 2), [4, 8], [0.1, 0.2], d, 3,
        ...                  progress=False)
        >>> df.shape
        (4, 9)
    """
    sizes, lrs, seeds = [int(s) for s in sizes], [float(v) for v in lrs], [int(s) for s in seeds]
    if axis not in AXES:
        raise InvalidArgumentError(f"axis must be one of {AXES}, got {axis!r}")
    if not sizes or any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
        raise InvalidArgumentError(f"{axis}s must be positive and strictly increasing, got "
                                   f"{sizes}; sort them, e.g. 64,128,256")
    _check_lrs(lrs)
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidArgumentError(f"seeds must be a non-empty list of distinct ints, got {seeds}")
    if optimizer not in OPTIMIZERS:
        raise InvalidArgumentError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if loss not in LOSSES:
        raise InvalidArgumentError(f"loss must be one of {LOSSES}, got {loss!r}")
    if int(steps) < 1:
        raise InvalidArgumentError(f"steps must be >= 1, got {steps}")
    steps = int(steps)
    settings = {"optimizer": optimizer, "batch_size": min(int(batch_size), len(data.x_train)),
                "loss": loss, "momentum": float(momentum), "weight_decay": float(weight_decay),
                "steps": steps, "data": data.name,
                "lr_multipliers": float(base_width) if lr_multipliers else None}
    cells = [(lr, s) for lr in lrs for s in seeds]
    rows = []
    if client is None:
        with tqdm(total=len(sizes) * len(cells), disable=not progress,
                  desc=f"lr transfer over {axis}", unit="cell") as bar:
            results = []
            for size in sizes:
                results.append(_size_cells(size, build, data, cells, settings, out, axis))
                bar.update(len(cells))
    else:
        from dynkit.cluster import map_ordered

        with tqdm(total=len(sizes), disable=not progress, desc=f"lr transfer over {axis}",
                  unit=axis) as bar:
            results = map_ordered(client, _size_cells, sizes, build, data, cells, settings,
                                  None if out is None else str(out), axis, bar=bar)
    for size, done in zip(sizes, results):
        for (lr, s) in cells:
            final = done[(lr, s)].set_index(["step", "split"]).loc[steps]
            rows.append({axis: size, "lr": lr, "log2_lr": math.log2(lr), "seed": s,
                         "loss": final.loc["train", "loss"],
                         "test_loss": final.loc["test", "loss"] if "test" in final.index
                         else math.nan,
                         "accuracy": final.loc["train", "accuracy"],
                         "test_accuracy": final.loc["test", "accuracy"]
                         if "test" in final.index else math.nan})
    df = pd.DataFrame(rows)
    df["diverged"] = ~np.isfinite(df["loss"].to_numpy(float))
    return df.sort_values([axis, "lr", "seed"], ignore_index=True)


def _size_cells(size: int, build, data: Dataset, cells, settings: dict, out, axis: str) -> dict:
    """The ``(lr, seed) -> metrics`` of every cell of one size: the finished cells read from
    ``out``, the missing ones trained together (one vmapped program) and written there. One
    Dask task of ``lr_transfer(client=...)``."""
    model = build(size)
    info = {c: dict(settings, axis=axis, size=size, lr=c[0], seed=c[1],
                    model=json.loads(json.dumps(dict(model.config)))) for c in cells}
    done = {c: _read_cell(cell_dir(out, axis, size, *c), info[c]) for c in cells} \
        if out is not None else {}
    todo = [c for c in cells if done.get(c) is None]
    if todo:
        new = _train_cells(model, data, todo, **{k: v for k, v in settings.items()
                                                 if k != "data"})
        for c, (params, metrics) in zip(todo, new):
            if out is not None:
                _write_cell(cell_dir(out, axis, size, *c), model, params, metrics, info[c])
            done[c] = metrics
    return done


def optimal_lr(df: pd.DataFrame, axis: str = "width", metric: str = "loss") -> pd.DataFrame:
    """The optimal ``log2 lr`` per size of an ``lr_transfer`` table.

    ``log2_lr_opt = argmin_lr mean_seeds metric(size, lr, seed)`` over the grid (a rate where
    any seed diverged counts as +inf); ``log2_lr_opt_std`` is the standard deviation over seeds
    of each seed's own argmin, the seed-to-seed uncertainty of the optimum.

    Returns:
        DataFrame ``<axis>, log2_lr_opt, log2_lr_opt_std, loss_opt, n_seeds``.

    Example:
        >>> t = pd.DataFrame({"width": [8, 8], "lr": [0.5, 1.0], "log2_lr": [-1.0, 0.0],
        ...                   "seed": [0, 0], "loss": [0.3, 0.1]})
        >>> optimal_lr(t)["log2_lr_opt"].tolist()
        [0.0]
    """
    if axis not in df.columns:
        raise InvalidArgumentError(f"no column {axis!r} in the table; pass axis= "
                                   f"(one of {AXES}) as given to lr_transfer")
    rows = []
    for size, g in df.groupby(axis):
        v = g[metric].to_numpy(float)
        g = g.assign(_v=np.where(np.isfinite(v), v, np.inf))
        curve = g.groupby("log2_lr")["_v"].mean()
        per_seed = g.loc[g.groupby("seed")["_v"].idxmin(), "log2_lr"].to_numpy(float)
        rows.append({axis: size, "log2_lr_opt": float(curve.idxmin()),
                     "log2_lr_opt_std": float(per_seed.std()), "loss_opt": float(curve.min()),
                     "n_seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows)


def optimum_spread(df: pd.DataFrame, axis: str = "width") -> float:
    """``max - min`` over sizes of the optimal ``log2 lr`` (``optimal_lr``): 0 for perfect
    transfer; the claim of Tensor Programs V is a spread of at most about one octave under muP.

    Example:
        >>> t = pd.DataFrame({"width": [8, 8, 16, 16], "log2_lr": [-1.0, 0.0, -1.0, 0.0],
        ...                   "lr": [0.5, 1, 0.5, 1], "seed": 0, "loss": [0.3, 0.1, 0.1, 0.3]})
        >>> optimum_spread(t)
        1.0
    """
    opt = optimal_lr(df, axis)["log2_lr_opt"]
    return float(opt.max() - opt.min())


# --------------------------------------------------------------------- one size, many cells
def _train_cells(model: Model, data: Dataset, cells, *, optimizer, batch_size, loss, momentum,
                 weight_decay, steps, lr_multipliers):
    """Train the ``(lr, seed)`` cells of one model together; ``[(params, metrics df)]``."""
    n = len(data.x_train)
    bs, per_epoch = batch_size, n // batch_size
    idx = np.stack([_batches(seed, steps, n, bs) for _, seed in cells])
    lrs = jnp.asarray([lr for lr, _ in cells], jnp.float32)
    keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in cells])
    run = _vmapped_run(model, optimizer, float(momentum), float(weight_decay), loss,
                       data.num_classes, lr_multipliers)
    splits = {s: data.split(s) for s in ("train", "test")}
    splits = {s: (jnp.asarray(x), jnp.asarray(y)) for s, (x, y) in splits.items() if len(x)}
    params, scores = run(lrs, keys, jnp.asarray(idx), jnp.asarray(data.x_train),
                         jnp.asarray(data.y_train), splits)
    params = jax.device_get(params)
    scores = jax.device_get(scores)
    out = []
    for i in range(len(cells)):
        rows = [{"step": step, "epoch": step / per_epoch, "split": s,
                 "loss": float(scores[s][t][0][i]), "accuracy": float(scores[s][t][1][i])}
                for t, step in enumerate((0, steps)) for s in splits]
        out.append((jax.tree_util.tree_map(lambda a, i=i: a[i], params),
                    pd.DataFrame(rows, columns=COLUMNS)))
    return out


def _batches(seed: int, steps: int, n: int, bs: int) -> np.ndarray:
    """The example indices of ``fit``'s steps ``0..steps-1``: epoch ``e`` reads the batches of
    ``default_rng((seed, e)).permutation(n)``, the last partial batch dropped."""
    per_epoch = n // bs
    epochs = -(-steps // per_epoch)
    order = np.concatenate([np.random.default_rng((seed, e)).permutation(n)[:per_epoch * bs]
                            for e in range(epochs)])
    return order[:steps * bs].reshape(steps, bs)


@functools.lru_cache(maxsize=8)
def _vmapped_run(model, optimizer, momentum, weight_decay, loss, num_classes, base_width):
    """``run(lrs, keys, idx, x, y, splits) -> (final params, scores)`` jit-compiled, vmapped over
    cells; ``scores[split] = ((loss0, acc0), (lossT, accT))`` each of shape ``(cells,)``.
    ``base_width``: ``None`` or the base width of the per-layer rates. Cached, so a resumed
    sweep or the same model in another sweep compiles once."""
    multipliers = None if base_width is None else lr_multipliers_of(model, optimizer, base_width)
    # update(lr) = lr update(1)
    opt = make_optimizer(optimizer, 1.0, momentum, weight_decay, multipliers)
    loss_f = loss_fn(loss, num_classes)
    objective = training_objective(model, loss_f)

    def score(params, splits):
        res = {}
        for s, (x, y) in splits.items():
            f = model.apply(params, x)
            classes = jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1 and f.ndim == 2
            acc = jnp.mean(jnp.argmax(f, -1) == y) if classes else jnp.nan
            res[s] = (loss_f(f, y), acc)
        return res

    def one(lr, key, idx, x, y, splits):
        trainable, stats = split_params(model.init(key))
        state = opt.init(trainable)

        def step(carry, ix):
            trainable, stats, state = carry
            (_, stats), grads = jax.value_and_grad(objective, has_aux=True)(
                trainable, stats, x[ix], y[ix])
            updates, state = opt.update(grads, state, trainable)
            updates = jax.tree_util.tree_map(lambda u: (lr * u).astype(u.dtype), updates)
            return (optax.apply_updates(trainable, updates), stats, state), None

        first = score(merge_params(trainable, stats), splits)
        (trainable, stats, _), _ = jax.lax.scan(step, (trainable, stats, state), idx)
        params = merge_params(trainable, stats)
        last = score(params, splits)
        return params, {s: (first[s], last[s]) for s in splits}

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None, None)))


# --------------------------------------------------------------------- run folders
def _read_cell(folder: Path, info: dict) -> pd.DataFrame | None:
    """The metrics of a finished cell, ``None`` if it is not finished; a finished cell of other
    settings is an error (no silent mixing of sweeps)."""
    if not (folder / METRICS_FILE).exists():
        return None
    saved = json.loads((folder / CELL_FILE).read_text())
    if saved != json.loads(json.dumps(info)):
        diff = sorted(k for k in set(saved) | set(info) if saved.get(k) != info.get(k))
        raise InvalidArgumentError(f"{str(folder)!r} holds a cell of another sweep (differs in "
                                   f"{', '.join(diff)}); use another out folder or the same "
                                   "settings")
    return pd.read_csv(folder / METRICS_FILE)


def _write_cell(folder: Path, model: Model, params, metrics: pd.DataFrame, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    steps = info["steps"]
    save_checkpoint(folder / f"step_{steps:06d}.safetensors", model, params, step=steps,
                    meta={k: v for k, v in info.items() if k != "model"})
    with atomic_write(folder / CELL_FILE, "w") as f:
        f.write(json.dumps(info, indent=1))
    with atomic_write(folder / METRICS_FILE, "w", newline="") as f:  # last: the cell is done
        metrics.to_csv(f, index=False)
