"""Layer re-initialization robustness (Zhang, Bengio & Singer 2019, "Are all layers created
equal?").

Take the trained parameters ``θ^T`` and reset one layer ``d`` to its value at an earlier step
``τ`` of the same run, ``θ^T_d <- θ^τ_d`` (``to="init"``: ``τ = 0``, "re-initialization"), or
to a fresh draw from the initializer (``to="random"``, "re-randomization"); every other layer
keeps its trained value. The test loss and accuracy of the modified network measure how much
that layer matters: *robust* layers barely change the error, *critical* ones (typically the
first layers) destroy it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
import pandas as pd

from dynkit.checkpoints.run import iterate
from dynkit.errors import InvalidArgumentError
from dynkit.evaluate import evaluate

__all__ = ["reinit_layers", "reinit_robustness"]


def reinit_layers(model, params) -> list[str]:
    """The layers that can be reset: the nodes that hold parameters, in graph order.

    Example:
        >>> import jax, dynkit as dk
        >>> m = dk.models.mlp(3, [4], 2)
        >>> reinit_layers(m, m.init(jax.random.PRNGKey(0)))
        ['fc0', 'head']
    """
    return [n.name for n in model.nodes if params.get(n.name)]


def _splits(data):
    if isinstance(data, tuple) and len(data) == 2:
        return {"test": data}
    if hasattr(data, "x_test"):
        splits = {"test": (data.x_test, data.y_test)}
        if getattr(data, "x_train", None) is not None:
            splits["train"] = (data.x_train, data.y_train)
        return splits
    raise InvalidArgumentError("data must be a dynkit Dataset or an (x, y) pair")


def _targets(run_or_ckpt, to, seed):
    """``(trained checkpoint, [(label step, params)])``."""
    single = hasattr(run_or_ckpt, "params") and hasattr(run_or_ckpt, "model")
    ckpts = [run_or_ckpt] if single else [c for _, c in iterate(run_or_ckpt, indexed=True)]
    if not ckpts:
        raise InvalidArgumentError("reinit_robustness: the run holds no checkpoints")
    final = ckpts[-1]
    out = []
    for t in (to if isinstance(to, (list, tuple)) else [to]):
        if t == "random":
            out.append((-1, final.model.init(jax.random.PRNGKey(seed))))
        elif t == "init" and not single:
            out.append((int(ckpts[0].step or 0), ckpts[0].params))
        elif isinstance(t, (int, np.integer)) and not isinstance(t, bool) and not single:
            match = [c for c in ckpts if c.step == t]
            if not match:
                raise InvalidArgumentError(f"reinit_robustness: no checkpoint at step {t}; "
                                           f"steps: {[c.step for c in ckpts]}")
            out.append((int(t), match[0].params))
        elif single:
            raise InvalidArgumentError(f"reinit_robustness: to={t!r} needs a run (a folder, a "
                                       "Run or a list of checkpoints); one checkpoint allows "
                                       "only to='random'")
        else:
            raise InvalidArgumentError(f"to must be 'init', 'random', a step (int) or a list "
                                       f"of them, got {t!r}")
    return final, out


def reinit_robustness(run_or_ckpt, data, to="init", *, layers: Sequence[str] | None = None,
                      loss: str = "cross_entropy", seed: int = 0) -> pd.DataFrame:
    """Loss and accuracy of the trained network with one layer reset at a time (Zhang et al.
    2019, Sec. 2).

    For each layer ``d`` and target ``τ``: ``θ' = θ^T`` except ``θ'_d = θ^τ_d``; rows give
    the loss and accuracy of ``θ'`` per split. Layer = a node with parameters (its whole
    parameter dict is reset, BatchNorm running statistics included). A row with
    ``layer="none"`` holds the unmodified network, the baseline.

    Args:
        run_or_ckpt: a run (folder, ``Run`` or list of checkpoints; the last one is the
            trained network) or a single checkpoint (then only ``to="random"``).
        data: a ``dynkit.data.Dataset`` (test and train splits) or an ``(x, y)`` test pair.
        to: ``"init"`` (the run's first checkpoint), an ``int`` step of the run, ``"random"``
            (a fresh ``model.init(PRNGKey(seed))``, re-randomization) or a list of them.
        layers: the layers to reset (default ``reinit_layers``).
        loss: ``"cross_entropy"`` or ``"mse"`` (``dynkit.evaluate.evaluate``).
        seed: the key of ``to="random"``.

    Returns:
        Tidy DataFrame ``step, reinit_step, layer, split, metric, value``: ``step`` the trained
        checkpoint's step, ``reinit_step`` the ``τ`` (``-1`` for ``"random"``), ``metric``
        ``loss`` / ``accuracy`` / ``error`` (``1 - accuracy``).

    References:
        Zhang, Bengio & Singer 2019, "Are all layers created equal?" (ICML workshop; JMLR
            2022).

    Example:
        >>> import jax
        >>> from types import SimpleNamespace
        >>> import dynkit as dk
        >>> m = dk.models.mlp(2, [4], 2)
        >>> run = [SimpleNamespace(model=m, params=m.init(jax.random.PRNGKey(s)), step=s,
        ...                        meta={}) for s in (0, 10)]
        >>> x, y = np.ones((6, 2), np.float32), np.zeros(6, int)
        >>> df = reinit_robustness(run, (x, y))
        >>> sorted(set(df.layer)), df.columns.tolist()
        (['fc0', 'head', 'none'], ['step', 'reinit_step', 'layer', 'split', 'metric', 'value'])
    """
    final, targets = _targets(run_or_ckpt, to, seed)
    model, params = final.model, final.params
    names = reinit_layers(model, params) if layers is None else list(layers)
    unknown = [n for n in names if not params.get(n)]
    if unknown:
        raise InvalidArgumentError(f"layers {unknown} hold no parameters; choose from "
                                   f"{reinit_layers(model, params)}")
    splits = _splits(data)
    num_classes = getattr(data, "num_classes", None)
    step = int(final.step or 0)

    def rows(p, layer, tau):
        out = []
        for r in evaluate(model, p, splits, loss=loss, num_classes=num_classes):
            for metric, v in (("loss", r["loss"]), ("accuracy", r["accuracy"]),
                              ("error", 1.0 - r["accuracy"])):
                out.append({"step": step, "reinit_step": tau, "layer": layer,
                            "split": r["split"], "metric": metric, "value": float(v)})
        return out

    table = rows(params, "none", step)
    for tau, source in targets:
        for name in names:
            table += rows({**params, name: source[name]}, name, tau)
    return pd.DataFrame(table)
