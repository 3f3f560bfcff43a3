"""Checkpoint metrics: the built-in ones, plugin loading, and evaluation over a run.

A metric is ``func(model, params, data) -> DataFrame`` with columns ``metric, value`` (and
optionally ``split``, ``layer``, ``q``), registered in ``dynkit.registry.METRICS`` through the
``dynkit.metrics`` entry-point group (``pyproject.toml``), where other installed distributions
add theirs; ``load_metrics()`` loads them all. ``metrics_over_run`` returns the tidy series
schema of ``dynkit.schema`` (``step, epoch, metric, value`` plus the optional columns); which
metric names each registered entry produced is recorded in the table's ``attrs["entries"]``.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.checkpoints.run import Run, iterate, load_run
from dynkit.errors import InvalidArgumentError
from dynkit.evaluate import evaluate
from dynkit.models.graph import LINEAR_OPS, split_params
from dynkit.registry import METRICS
from dynkit.schema import COLUMNS, REQUIRED, check_tidy, step_epoch, tidy

__all__ = ["check_tidy", "checkpoint_metrics", "compute_metrics", "load_metrics",
           "metrics_over_run", "metrics_over_runs", "performance", "weight_norms"]


def load_metrics() -> list[str]:
    """Names of every registered metric (loads the ``dynkit.metrics`` entry points once).

    Example:
        >>> from dynkit.metrics import load_metrics
        >>> {"performance", "weights", "collapse"} <= set(load_metrics())
        True
    """
    return METRICS.names()


@METRICS.register("performance", "loss and accuracy on the train and test splits")
def performance(model, params, data) -> pd.DataFrame:
    """Loss (cross-entropy for classification, ``½‖f−y‖²`` for regression) and accuracy, by
    ``dynkit.evaluate.evaluate`` (the trainer's evaluator)."""
    classification = data.task == "classification"
    splits = {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)}
    rows = []
    for r in evaluate(model, params, splits, loss="cross_entropy" if classification else "mse",
                      num_classes=data.num_classes):
        rows.append({"metric": "loss", "split": r["split"], "value": r["loss"]})
        if classification:
            rows.append({"metric": "accuracy", "split": r["split"], "value": r["accuracy"]})
    return pd.DataFrame(rows)


@METRICS.register("weights", "Frobenius norm of each layer's effective weight, and in total")
def weight_norms(model, params, data=None) -> pd.DataFrame:
    """``‖w_mult · W_l‖_F`` per dense/conv/conv_transpose layer and ``(Σ_l ‖·‖_F²)^{1/2}`` over all of them."""
    trainable, _ = split_params(params)
    rows = []
    for node in model.nodes:
        if node.op in LINEAR_OPS:
            w_mult, _ = model.multipliers(node.name)
            w = np.asarray(trainable[node.name]["w"], dtype=np.float64) * w_mult
            rows.append({"metric": "weight_norm", "layer": node.name,
                         "value": float(np.linalg.norm(w))})
    total = float(np.sqrt(sum(r["value"] ** 2 for r in rows)))
    rows.append({"metric": "weight_norm", "layer": "total", "value": total})
    return pd.DataFrame(rows)


def compute_metrics(model, params, data, names) -> pd.DataFrame:
    """Evaluate the named metrics on one checkpoint: one frame with columns ``metric, value``
    and the optional ``split, layer, q`` the metrics give; ``attrs["entries"]`` maps each
    entry name to the metric names it produced."""
    frames, entries = [], {}
    for name in names:
        df = METRICS.get(name).func(model, params, data)
        _check_entry(name, df)
        entries[name] = list(dict.fromkeys(df["metric"]))
        frames.append(df)
    produced = [m for ms in entries.values() for m in ms]
    clash = sorted({m for m in produced if produced.count(m) > 1})
    if clash:
        raise InvalidArgumentError(f"metrics {list(names)} produce the same metric name(s) "
                                   f"{clash}; evaluate them separately")
    table = pd.concat(frames, ignore_index=True)
    table.attrs["entries"] = entries
    return table


def checkpoint_metrics(ckpt, data, names, index: int = 0) -> pd.DataFrame:
    """``compute_metrics`` of one checkpoint as a tidy series (``dynkit.schema``).

    Args:
        ckpt: a ``Checkpoint`` (``model``, ``params``, ``step``, ``meta``).
        data: the ``Dataset`` the metrics use.
        names: registered metric names (``load_metrics()``).
        index: the checkpoint's position in its run, its step when it has none.

    Returns:
        The tidy frame, ``step`` and ``epoch`` from the checkpoint (``step_epoch``);
        ``attrs["entries"]`` maps each name to the metric names it produced.

    Example:
        >>> import jax, dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=32, n_test=8, num_classes=2, dim=3)
        >>> model = dk.models.mlp(3, [4], 2)
        >>> ckpt = dk.Checkpoint(model, model.init(jax.random.PRNGKey(0)), 7, None, None)
        >>> table = checkpoint_metrics(ckpt, data, ["weights"])
        >>> table[["step", "metric", "layer"]].iloc[0].astype(str).tolist()
        ['7', 'weight_norm', 'fc0']
        >>> table.attrs["entries"]
        {'weights': ['weight_norm']}
    """
    table = compute_metrics(ckpt.model, ckpt.params, data, names)
    out = tidy(table.assign(**step_epoch(ckpt, index)))
    out.attrs["entries"] = table.attrs["entries"]
    return out


def metrics_over_run(run, data, names, every: int = 1, progress: bool = True,
                     client=None) -> pd.DataFrame:
    """Evaluate the named metrics on every ``every``-th checkpoint of a run (plus the last).

    ``run``: a run folder, a ``Run`` or an iterable of checkpoints
    (``dynkit.checkpoints.iterate``). Returns the tidy series (``dynkit.schema``): one row per
    (step, metric, split/layer/q); ``attrs["entries"]`` maps each entry name to its metric
    names.

    With ``client`` (a ``dask.distributed.Client``) each checkpoint is one Dask task: ``data``
    is scattered once, a folder's or ``Run``'s checkpoint is loaded on its worker (which must
    see the run folder), and the table is the in-process one, row for row. The metrics must
    be registered on the workers too (built in, or installed through the entry points)."""
    return metrics_over_runs({None: run}, data, names, every, progress, client)[None]


def metrics_over_runs(runs, data, names, every: int = 1, progress: bool = True,
                      client=None) -> dict[str, pd.DataFrame]:
    """``metrics_over_run`` of several runs: ``{name: table}``, each table that of its run alone.

    ``runs``: a mapping ``{name: run}`` (each run as ``metrics_over_run`` takes it). With
    ``client`` every picked checkpoint of every run is one Dask task and all are submitted at
    once, so a cluster works on all the runs together; the tables are the in-process ones, row
    for row. Without it the runs are evaluated here, one after another."""
    runs = dict(runs)
    if client is None:
        tables = {}
        for key, run in runs.items():
            frames = [checkpoint_metrics(ckpt, data, names, i) for i, ckpt in
                      tqdm(iterate(run, every, indexed=True),
                           desc="checkpoints" if key is None else f"checkpoints of {key}",
                           disable=not progress)]
            tables[key] = _series(frames, key)
        return tables
    from dynkit.cluster import map_ordered

    picked = {key: _picked(run, every) for key, run in runs.items()}
    items = [item for items in picked.values() for item in items]
    with tqdm(total=len(items), desc="checkpoints", disable=not progress) as bar:
        frames = map_ordered(client, _task_metrics, items, data, list(names), bar=bar)
    tables, start = {}, 0
    for key, items in picked.items():
        tables[key] = _series(frames[start:start + len(items)], key)
        start += len(items)
    return tables


def _series(frames: list, key) -> pd.DataFrame:
    """One run's per-checkpoint frames as its tidy series, with ``attrs["entries"]``."""
    if not frames:
        which = "the run" if key is None else f"the run {key!r}"
        raise InvalidArgumentError(f"metrics_over_run: {which} holds no checkpoints")
    table = tidy(pd.concat(frames, ignore_index=True))
    table.attrs["entries"] = frames[0].attrs["entries"]
    return table


def _picked(run, every: int) -> list:
    """``(index, item)`` for the checkpoints ``iterate`` picks: for a folder or ``Run`` the item
    is a one-checkpoint ``Run``, loaded by the task that uses it; else the checkpoint."""
    if isinstance(run, (str, os.PathLike)):
        run = load_run(run)
    if isinstance(run, Run):
        return [(i, run[i:i + 1]) for i in iterate(range(len(run)), every)]
    return list(iterate(run, every, indexed=True))


def _task_metrics(item, data, names) -> pd.DataFrame:
    """One Dask task of ``metrics_over_run``: ``checkpoint_metrics`` of one checkpoint."""
    index, ckpt = item
    return checkpoint_metrics(ckpt[0] if isinstance(ckpt, Run) else ckpt, data, names, index)


def _check_entry(name: str, df) -> None:
    """A metric's frame: ``metric, value`` and only optional schema columns."""
    allowed = set(COLUMNS) - {"step", "epoch"}
    if not isinstance(df, pd.DataFrame) or not {"metric", "value"} <= set(df.columns):
        raise InvalidArgumentError(f"metric {name!r} must return a DataFrame with columns "
                                   f"'metric' and 'value'")
    extra = [c for c in df.columns if c not in allowed]
    if extra:
        raise InvalidArgumentError(
            f"metric {name!r} returned columns {extra} outside the series schema "
            f"{list(REQUIRED)} + optional {[c for c in COLUMNS if c not in REQUIRED]}")
