"""The μP coordinate check (Yang et al. 2022, "Tensor Programs V", Sec. D.1 / Fig. 5).

For each width ``n`` of a model family, train a few steps from the same data batch and record,
per tapped layer ``h`` (and the output) after ``t`` steps,

    activation size  a_t(n) = RMS(h_t(x)),     update size  u_t(n) = RMS(h_t(x) - h_0(x)),

``RMS(v) = sqrt(mean v²)`` over batch and coordinates. Under a correct μP every ``u_t(n)`` is
flat in ``n``; under the standard parameterization at a fixed rate hidden and output updates
grow (like ``n`` for SGD). The trend is the least-squares slope of ``log u_t`` against
``log n``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from dynkit.data import Dataset
from dynkit.errors import InvalidArgumentError
from dynkit.losses import loss_fn
from dynkit.models.graph import Model
from dynkit.models.lr_scaling import lr_multipliers
from dynkit.train import make_optimizer

__all__ = ["CoordinateCheck", "check_widths", "coordinate_check", "width_slopes"]


@dataclass(frozen=True)
class CoordinateCheck:
    """``frame``: tidy ``width, step, layer, activation_size, update_size``; ``slopes``: per
    ``layer, step`` the log-log slope of the update size in width and its ``flag``
    (``grows``, ``shrinks`` or ``flat``); ``flagged``: the layers flagged at any step."""

    frame: pd.DataFrame
    slopes: pd.DataFrame

    @property
    def flagged(self) -> list[str]:
        bad = self.slopes[self.slopes["flag"] != "flat"]
        return sorted(set(bad["layer"]))


def check_widths(widths: Sequence[int]) -> list[int]:
    """``widths`` as ints, checked to be at least two, positive and strictly increasing.

    Example:
        >>> check_widths([64, 128])
        [64, 128]
    """
    ws = [int(w) for w in widths]
    if len(ws) < 2 or ws[0] < 1 or any(b <= a for a, b in itertools.pairwise(ws)):
        raise InvalidArgumentError(f"widths must be >= 2 positive, strictly increasing values "
                                   f"(e.g. 64,128,256), got {list(widths)}")
    return ws


def width_slopes(frame: pd.DataFrame, value: str = "update_size",
                 tolerance: float = 0.25) -> pd.DataFrame:
    """Least-squares slope of ``log value`` vs ``log width`` per ``layer, step`` (steps >= 1)
    and its flag: ``grows`` above ``tolerance``, ``shrinks`` below ``-tolerance``.

    Example:
        >>> f = pd.DataFrame({"width": [1, 4], "step": 1, "layer": "h", "update_size": [1., 2.]})
        >>> width_slopes(f).round(6)[["slope", "flag"]].values.tolist()
        [[0.5, 'grows']]
    """
    rows = []
    for (layer, step), g in frame[frame["step"] >= 1].groupby(["layer", "step"], sort=False):
        slope = float(np.polyfit(np.log(g["width"]), np.log(g[value]), 1)[0])
        flag = "grows" if slope > tolerance else "shrinks" if slope < -tolerance else "flat"
        rows.append({"layer": layer, "step": int(step), "slope": slope, "flag": flag})
    return pd.DataFrame(rows, columns=["layer", "step", "slope", "flag"])


def _batch(data, batch_size: int):
    if isinstance(data, Dataset):
        x, y = data.x_train, data.y_train
        return x[:batch_size], y[:batch_size], data.task, data.num_classes
    x, y = data
    return np.asarray(x), np.asarray(y), "classification" if np.asarray(y).ndim == 1 else \
        "regression", int(np.max(y)) + 1 if np.asarray(y).ndim == 1 else None


def coordinate_check(build: Callable[[int], Model], widths: Sequence[int], data,
                     steps: int = 5, *, optimizer: str = "sgd", lr: float = 0.1,
                     batch_size: int = 32, loss: str | None = None,
                     seeds: Sequence[int] = (0,),
                     lr_scaling: bool = False, base_width: float = 1.0,
                     tolerance: float = 0.25) -> CoordinateCheck:
    """The coordinate check of ``build(n)`` for each ``n`` in ``widths``.

    Every width trains ``steps`` full-batch steps (``optimizer``, rate ``lr``, the per-layer
    multipliers of ``dynkit.models.lr_multipliers`` when ``lr_scaling``) on the first
    ``batch_size`` training examples of ``data``, from ``init(PRNGKey(seed))``; the sizes are
    measured on that batch after each step (module docstring) and averaged over ``seeds``
    (finite-width fluctuations are ``O(n^(-1/2))``: average a few seeds at small widths).

    Args:
        build: width -> ``Model`` (e.g. ``lambda n: mlp(8, [n, n], 4, parameterization="mup")``).
        widths: strictly increasing widths.
        data: a ``Dataset`` or ``(x, y)`` arrays.
        steps: number of steps ``>= 1``.
        optimizer, lr: as in ``dynkit.train.make_optimizer``.
        batch_size: examples in the batch.
        loss: ``cross_entropy`` or ``mse`` (default: by task).
        seeds: initialization seeds (sizes are their means).
        lr_scaling: apply μP / Depth-μP per-layer rates.
        base_width: width at which those multipliers are 1.
        tolerance: a ``|slope|`` above it flags the layer.

    Returns:
        ``CoordinateCheck(frame, slopes)``.

    Raises:
        InvalidArgumentError: widths not increasing, ``steps < 1``.

    References:
        Yang et al. 2022, "Tensor Programs V: tuning large neural networks via zero-shot
        hyperparameter transfer" (the coordinate check).
    """
    ws = check_widths(widths)
    if int(steps) < 1:
        raise InvalidArgumentError(f"steps must be >= 1, got {steps}")
    x, y, task, num_classes = _batch(data, int(batch_size))
    loss = loss or ("cross_entropy" if task == "classification" else "mse")
    loss_f = loss_fn(loss, num_classes)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
    rows = []
    for n in ws:
        model = build(n)
        mults = lr_multipliers(model, optimizer, base_width) if lr_scaling else None
        opt = make_optimizer(optimizer, lr, multipliers=mults)
        rows.extend(_width_rows(model, opt, loss_f, x, y, seeds, int(steps), n))
    frame = (pd.DataFrame(rows).groupby(["width", "step", "layer"], sort=False).mean()
             .reset_index().sort_values(["width", "step"], kind="stable").reset_index(drop=True))
    return CoordinateCheck(frame, width_slopes(frame, tolerance=tolerance))


def _width_rows(model, opt, loss_f, x, y, seeds, steps: int, n: int) -> list[dict]:
    """Coordinate-check rows of one width: activation and update size per layer and step."""
    layers = [*model.layer_names(), model.output]

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda q: loss_f(model.apply(q, x), y))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    def acts(p):
        out = model.forward(p, x, keep=layers)
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    rows = []
    for seed in seeds:
        params = model.init(jax.random.PRNGKey(int(seed)))
        state = opt.init(params)
        h0 = acts(params)
        rows.extend({"width": n, "step": 0, "layer": layer,
                     "activation_size": float(np.sqrt(np.mean(h0[layer] ** 2))),
                     "update_size": 0.0} for layer in layers)
        for t in range(1, steps + 1):
            params, state = step(params, state)
            ht = acts(params)
            rows.extend({"width": n, "step": t, "layer": layer,
                         "activation_size": float(np.sqrt(np.mean(ht[layer] ** 2))),
                         "update_size": float(np.sqrt(np.mean((ht[layer] - h0[layer]) ** 2)))}
                        for layer in layers)
    return rows
