"""Checkpoint metrics: the built-in ones, plugin loading, and evaluation over a run.

A metric is ``func(model, params, data) -> DataFrame`` with columns ``metric, value`` (and
optionally ``split``, ``layer``), registered in ``dynkit.registry.METRICS`` through the
``dynkit.metrics`` entry-point group (``pyproject.toml``), where other installed distributions
add theirs; ``load_metrics()`` loads them all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.losses import accuracy, loss_fn
from dynkit.models.graph import split_params
from dynkit.registry import METRICS


def load_metrics() -> list[str]:
    """Names of every registered metric (loads the ``dynkit.metrics`` entry points once).

    Example:
        >>> from dynkit.metrics import load_metrics
        >>> {"performance", "weights", "collapse"} <= set(load_metrics())
        True
    """
    return METRICS.names()


def _batched_logits(model, params, x, batch_size=1024):
    apply = jax.jit(lambda p, xb: model.apply(p, xb))
    return jnp.concatenate([apply(params, x[i:i + batch_size])
                            for i in range(0, len(x), batch_size)])


@METRICS.register("performance", "loss and accuracy on the train and test splits")
def performance(model, params, data) -> pd.DataFrame:
    """Loss (cross-entropy for classification, ``½‖f−y‖²`` for regression) and accuracy."""
    task_loss = loss_fn("cross_entropy" if data.task == "classification" else "mse",
                        data.num_classes)
    rows = []
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        logits = _batched_logits(model, params, jnp.asarray(x))
        rows.append({"metric": "loss", "split": split,
                     "value": float(task_loss(logits, jnp.asarray(y)))})
        if data.task == "classification":
            rows.append({"metric": "accuracy", "split": split, "value": float(accuracy(logits, y))})
    return pd.DataFrame(rows)


@METRICS.register("weights", "Frobenius norm of each layer's effective weight, and in total")
def weight_norms(model, params, data=None) -> pd.DataFrame:
    """``‖w_mult · W_l‖_F`` per dense/conv layer and ``(Σ_l ‖·‖_F²)^{1/2}`` over all of them."""
    trainable, _ = split_params(params)
    rows = []
    for node in model.nodes:
        if node.op in ("dense", "conv"):
            w = np.asarray(trainable[node.name]["w"], dtype=np.float64) * node.attrs["w_mult"]
            rows.append({"metric": "weight_norm", "layer": node.name,
                         "value": float(np.linalg.norm(w))})
    total = float(np.sqrt(sum(r["value"] ** 2 for r in rows)))
    rows.append({"metric": "weight_norm", "layer": "total", "value": total})
    return pd.DataFrame(rows)


def compute_metrics(model, params, data, names) -> pd.DataFrame:
    """Evaluate the named metrics on one checkpoint: one tidy frame, a ``metric`` column."""
    frames = [METRICS.get(n).func(model, params, data).assign(group=n) for n in names]
    return pd.concat(frames, ignore_index=True)


def metrics_over_run(run, data, names, every: int = 1, progress: bool = True) -> pd.DataFrame:
    """Evaluate the named metrics on every ``every``-th checkpoint of a run (plus the last).

    Returns a tidy frame with a ``step`` column, one row per (step, metric, split/layer)."""
    indices = sorted(set(range(0, len(run), every)) | {len(run) - 1})
    frames = []
    for i in tqdm(indices, desc="checkpoints", disable=not progress):
        ckpt = run[i]
        frames.append(compute_metrics(ckpt.model, ckpt.params, data, names).assign(step=ckpt.step))
    return pd.concat(frames, ignore_index=True)
