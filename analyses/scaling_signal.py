"""Per-block signal propagation of residual networks (Brock, De & Smith 2021,
"Characterizing signal propagation to close the performance gap in unnormalized ResNets").

For each residual block ``k`` (an ``add`` node; its output is the first tapped node at or
after it) and activations ``h`` of shape ``(B, ..., C)``, with per-channel moments over batch
and positions:

* ``mean_sq``: average channel squared mean ``(1/C) Σ_c (E h_c)²``;
* ``var``: average channel variance ``(1/C) Σ_c Var h_c``;
* ``residual_var``: the same variance of the block's residual branch (the ``add`` input with
  the most dense/conv layers behind it) just before the sum;
* ``correlation``: mean over the batch of ``cos(h(x_b), h(x'_b))`` for a second input batch;
* ``grad_norm``: ``‖∂L/∂h‖_F`` for the probe loss ``L = (1/B) Σ_b Σ_k f_k(x_b)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.errors import InvalidArgumentError
from dynkit.models.graph import LINEAR_OPS, Model, Params
from dynkit.registry import METRICS

__all__ = ["SIGNAL_POINTS", "residual_blocks", "residual_forward_variance", "signal_metric",
           "signal_propagation"]


def residual_blocks(model: Model) -> list[tuple[str, str, str]]:
    """``(add node, block output, residual-branch node)`` of every residual sum.

    Example:
        >>> from dynkit.models import residual_mlp
        >>> residual_blocks(residual_mlp(3, 4, 2, 1))[0]
        ('block0.add', 'block0.add', 'block0.fc')
    """
    depth: dict[str, int] = {}
    for n in model.nodes:
        depth[n.name] = (n.op in LINEAR_OPS) + max((depth[s] for s in n.inputs), default=0)
    names = [n.name for n in model.nodes]
    taps = [i for i, n in enumerate(model.nodes) if n.attrs.get("tap")]
    out = []
    for i, n in enumerate(model.nodes):
        if n.op != "add":
            continue
        end = next((names[j] for j in taps if j >= i), n.name)
        branch = max(n.inputs, key=lambda s: depth[s])
        out.append((n.name, end, branch))
    return out


def _channel_stats(h: np.ndarray) -> tuple[float, float]:
    flat = h.reshape(-1, h.shape[-1])
    return float(np.mean(flat.mean(0) ** 2)), float(np.mean(flat.var(0)))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def signal_propagation(model: Model, params: Params, x, x2=None, *, residual: bool = True,
                       train: bool | None = None) -> pd.DataFrame:
    """Signal-propagation statistics per block (module docstring), one row per block.

    Args:
        model: the network.
        params: its parameters (e.g. a checkpoint's, or ``model.init``).
        x: an input batch ``(B, *input_shape)``.
        x2: a second batch for the correlation (default ``x`` rolled by one example).
        residual: rows per residual block with ``residual_var``; ``False``: per tapped layer
            without it (for networks without residual blocks).
        train: BatchNorm with batch statistics (default: when the model has BatchNorm, as at
            init in Brock et al. 2021).

    Returns:
        DataFrame ``block, index, mean_sq, var, correlation, grad_norm`` (``residual_var``
        too with ``residual``).

    Raises:
        InvalidArgumentError: ``residual`` on a model without residual (``add``) blocks.

    References:
        Brock, De & Smith 2021, "Characterizing signal propagation to close the performance
        gap in unnormalized ResNets" (ICLR), Sec. 3 (signal propagation plots).
    """
    train = model.has_batchnorm if train is None else bool(train)
    if residual:
        blocks = residual_blocks(model)
        if not blocks:
            raise InvalidArgumentError(
                f"model {model.arch!r} has no residual blocks (add nodes): pass residual=False "
                "for per-layer statistics without residual-branch variances")
        ends, branches = [b[1] for b in blocks], [b[2] for b in blocks]
    else:
        ends, branches = model.layer_names(), []
    x = jnp.asarray(x)
    x2 = jnp.roll(x, 1, axis=0) if x2 is None else jnp.asarray(x2)
    keep = list(dict.fromkeys(ends + branches))
    acts = {k: np.asarray(v, np.float64) for k, v in
            model.forward(params, x, keep=keep, train=train).items()}
    acts2 = model.forward(params, x2, keep=ends, train=train)
    zeros = {k: jnp.zeros_like(jnp.asarray(acts[k], x.dtype)) for k in dict.fromkeys(ends)}

    def probe(perturb):
        out = model.forward(params, x, keep=[], train=train, perturb=perturb)[model.output]
        return jnp.sum(out) / x.shape[0]

    grads = jax.grad(probe)(zeros)
    rows = []
    for i, end in enumerate(ends):
        mean_sq, var = _channel_stats(acts[end])
        row = {"block": end, "index": i, "mean_sq": mean_sq, "var": var,
               "correlation": _cosine(acts[end], np.asarray(acts2[end], np.float64)),
               "grad_norm": float(np.linalg.norm(np.asarray(grads[end], np.float64)))}
        if residual:
            row["residual_var"] = _channel_stats(acts[branches[i]])[1]
        rows.append(row)
    return pd.DataFrame(rows)


def residual_forward_variance(q0: float, depth: int, branch: float, sw2: float = 2.0,
                              activation: Callable = jax.nn.relu) -> np.ndarray:
    """Expected second moment ``q_l`` of the stream of ``h_{l+1} = h_l + s W_l φ(h_l)`` at
    init, ``W_l ~ N(0, sw2/n)``, for ``l = 0..L``: the kernel recursion

        q_{l+1} = q_l + s² · sw2 · E_z φ(√q_l z)²    (``dynkit.theory.signal_prop.length_map``)

    For ReLU and ``sw2 = 2`` it is ``q_L = q_0 (1 + s²)^L``: ``2^L q_0`` without branch
    scaling, at most ``e · q_0`` with ``s = 1/sqrt(L)`` (Yang et al. 2023; Hayou et al. 2021).

    Example:
        >>> residual_forward_variance(1.0, 3, 1.0).round(4).tolist()
        [1.0, 2.0, 4.0, 8.0]
    """
    from dynkit.theory.signal_prop import length_map

    if int(depth) < 0:
        raise InvalidArgumentError(f"depth must be >= 0, got {depth}")
    q = [float(q0)]
    for _ in range(int(depth)):
        q.append(q[-1] + branch ** 2 * length_map(q[-1], sw2, 0.0, activation))
    return np.asarray(q)


#: examples of the data set ``signal_metric`` evaluates on
SIGNAL_POINTS = 64


@METRICS.register(
    "signal",
    f"per-block signal propagation on the first {SIGNAL_POINTS} training points: channel "
    "mean², channel variance, residual-branch variance, input correlation, gradient norm",
)
def signal_metric(model: Model, params: Params, data) -> pd.DataFrame:
    """Registry metric ``"signal"``: ``signal_propagation`` of one checkpoint on the first
    ``SIGNAL_POINTS`` training inputs, one row per block and statistic (metric
    ``signal_<stat>``, ``layer`` the block output); per tapped layer without residual
    statistics for networks without residual blocks.

    Example:
        >>> import dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=8, n_test=4, dim=3)
        >>> model = dk.models.residual_mlp(3, 4, 2, 3)
        >>> df = signal_metric(model, model.init(jax.random.PRNGKey(0)), data)
        >>> sorted(set(df.metric))[:2], df.layer.unique().tolist()
        (['signal_correlation', 'signal_grad_norm'], ['block0.add', 'block1.add'])
    """
    if data is None:
        raise InvalidArgumentError("the 'signal' metric needs a data set for its input batch")
    frame = signal_propagation(model, params, np.asarray(data.x_train[:SIGNAL_POINTS]),
                               residual=bool(residual_blocks(model)))
    stats = [c for c in frame.columns if c not in ("block", "index")]
    long = frame.melt(id_vars=["block"], value_vars=stats, var_name="metric")
    return pd.DataFrame({"metric": "signal_" + long["metric"], "value": long["value"],
                         "layer": long["block"]})
