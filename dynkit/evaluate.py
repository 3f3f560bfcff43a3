"""Compiled forward passes, one per model, and the one batched evaluator (loss, accuracy).

A ``Model`` hashes by its graph, so ``compiled_apply(model)`` and friends return the same
jitted function for every checkpoint of a run: XLA compiles each input shape once per run.
``evaluate`` is the loss/accuracy evaluation that the trainer, the ``performance`` metric and
linear mode connectivity share.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError
from dynkit.losses import accuracy, loss_fn
from dynkit.models.graph import Model, Params

#: Inputs per compiled forward call of ``logits`` and ``evaluate``.
BATCH_SIZE = 1024

__all__ = ["BATCH_SIZE", "compiled_apply", "compiled_features", "compiled_intermediates",
           "evaluate", "logits", "score"]


@functools.lru_cache(maxsize=32)
def compiled_apply(model: Model) -> Callable:
    """``jax.jit`` of ``(params, x) -> model.apply(params, x, train=False)``, one per model graph.

    Args:
        model: a dynkit ``Model`` (equal graphs share the compiled function).

    Returns:
        The jitted function.

    Example:
        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(3, [4], 2)
        >>> compiled_apply(m) is compiled_apply(dk.models.mlp(3, [4], 2))
        True
    """
    def apply(p, xb):
        return model.apply(p, xb, train=False)

    return jax.jit(apply)


@functools.lru_cache(maxsize=32)
def compiled_features(model: Model) -> Callable:
    """``jax.jit`` of ``(params, x) -> model.features(params, x)`` (eval mode), one per graph.

    Args:
        model: a dynkit ``Model``.

    Returns:
        The jitted function, ``(batch, D)`` features.

    Example:
        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(3, [4], 2)
        >>> compiled_features(m)(m.init(jax.random.PRNGKey(0)), jax.numpy.ones((5, 3))).shape
        (5, 4)
    """
    def features(p, xb):
        return model.features(p, xb)

    return jax.jit(features)


@functools.lru_cache(maxsize=32)
def compiled_intermediates(model: Model, names: tuple[str, ...]) -> Callable:
    """``jax.jit`` of ``(params, x) -> model.intermediates(params, x, names)``, one per graph
    and tuple of node names.

    Args:
        model: a dynkit ``Model``.
        names: node names (a tuple, so that it can key the cache).

    Returns:
        The jitted function, ``{name: (batch, D) activations}``.

    Example:
        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(3, [4], 2)
        >>> out = compiled_intermediates(m, ("head",))(m.init(jax.random.PRNGKey(0)),
        ...                                           jax.numpy.ones((5, 3)))
        >>> out["head"].shape
        (5, 2)
    """
    def intermediates(p, xb):
        return model.intermediates(p, xb, list(names))

    return jax.jit(intermediates)


def logits(model: Model, params: Params, x, *, batch_size: int = BATCH_SIZE, dtype=None):
    """``model.apply(params, x, train=False)`` in compiled chunks of ``min(batch_size, len(x))``
    inputs, the last chunk zero-padded, so one compilation serves any number of inputs.

    Args:
        model: a dynkit ``Model``.
        params: its parameters.
        x: inputs ``(n, *model.input_shape)``.
        batch_size: inputs per compiled call.
        dtype: cast the inputs to this dtype (default: ``jnp.asarray``'s).

    Returns:
        The outputs, a jax array ``(n, ...)``.

    Example:
        >>> import jax, numpy as np, dynkit as dk
        >>> m = dk.models.mlp(3, [4], 2)
        >>> p = m.init(jax.random.PRNGKey(0))
        >>> x = np.ones((5, 3), np.float32)
        >>> bool(np.allclose(logits(m, p, x, batch_size=2), m.apply(p, x), atol=1e-6))
        True
    """
    if int(batch_size) < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    return _chunked(compiled_apply(model), params, x, min(int(batch_size), len(x)), dtype)


def _chunked(apply: Callable, params, x, chunk: int, dtype):
    """``apply(params, ·)`` over ``x`` in chunks of ``chunk`` inputs, the last zero-padded."""
    out = []
    for i in range(0, len(x), chunk):
        xb = np.asarray(x[i:i + chunk])
        pad = np.zeros((chunk - len(xb), *xb.shape[1:]), xb.dtype)
        out.append(apply(params, jnp.asarray(np.concatenate([xb, pad]), dtype))[:len(xb)])
    return jnp.concatenate(out)


def score(outputs, y, task_loss: Callable) -> tuple[float, float]:
    """``(loss, accuracy)`` of outputs against targets.

    ``accuracy`` is the fraction of ``argmax(outputs) == y`` for integer labels ``y`` of shape
    ``(n,)`` and outputs ``(n, C)``, NaN otherwise (regression).

    Args:
        outputs: model outputs ``(n, ...)``.
        y: integer labels ``(n,)`` or real targets.
        task_loss: ``(outputs, y) -> scalar`` (``dynkit.losses.loss_fn``).

    Returns:
        Two floats.

    Example:
        >>> import numpy as np
        >>> from dynkit.losses import loss_fn
        >>> score(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]),
        ...       loss_fn("cross_entropy", 2))[1]
        0.5
    """
    y = jnp.asarray(y)
    classes = jnp.issubdtype(y.dtype, jnp.integer) and y.ndim == 1 and jnp.ndim(outputs) == 2
    acc = float(accuracy(outputs, y)) if classes else math.nan
    return float(task_loss(outputs, y)), acc


def evaluate(model: Model, params: Params, splits: Mapping[str, tuple], *,
             loss: str = "cross_entropy", num_classes: int | None = None,
             batch_size: int = BATCH_SIZE, dtype=None) -> list[dict]:
    """Loss and accuracy of ``model.apply(params, ·, train=False)`` on named splits.

    Every split runs in compiled chunks of one size, ``min(batch_size, largest split)`` (the
    last chunk zero-padded), so one compilation per model serves all splits and checkpoints.
    Cross-entropy ``-(1/n) Σ_i log softmax(f(x_i))[y_i]`` or mean squared error
    ``(1/2n) Σ_i ‖f(x_i) − y_i‖²`` (``dynkit.losses``); accuracy as in ``score``. Empty
    splits are skipped.

    Args:
        model: a dynkit ``Model``.
        params: its parameters.
        splits: ``{name: (x, y)}``, ``y`` integer labels or real targets.
        loss: ``"cross_entropy"`` or ``"mse"``.
        num_classes: for ``"mse"`` on integer labels (one-hot targets).
        batch_size: inputs per compiled call.
        dtype: cast inputs (and real targets) to this dtype (default: ``jnp.asarray``'s).

    Returns:
        One dict ``{"split", "loss", "accuracy"}`` per non-empty split.

    Example:
        >>> import jax, numpy as np, dynkit as dk
        >>> m = dk.models.mlp(3, [4], 2)
        >>> p = m.init(jax.random.PRNGKey(0))
        >>> x, y = np.ones((6, 3), np.float32), np.zeros(6, int)
        >>> [r["split"] for r in evaluate(m, p, {"train": (x, y), "test": (x[:0], y[:0])})]
        ['train']
    """
    if int(batch_size) < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1, got {batch_size}")
    task_loss = loss_fn(loss, num_classes)
    splits = {s: (x, y) for s, (x, y) in splits.items() if len(x)}
    if not splits:
        return []
    chunk = min(int(batch_size), max(len(x) for x, _ in splits.values()))
    apply = compiled_apply(model)
    rows = []
    for split, (x, y) in splits.items():
        out = _chunked(apply, params, x, chunk, dtype)
        y = np.asarray(y)
        y = jnp.asarray(y, None if np.issubdtype(y.dtype, np.integer) else dtype)
        lo, acc = score(out, y, task_loss)
        rows.append({"split": split, "loss": lo, "accuracy": acc})
    return rows
