"""Linear mode connectivity: interpolation curves, barriers, alignment, layer-wise LMC.

``interpolate`` evaluates ``θ(α) = (1 − α) θ_A + α θ_B`` on a grid of α. For BatchNorm networks
the running statistics of ``θ(α)`` are wrong (variance collapse, Jordan et al. 2023), so by default
they are re-estimated on training data at every α ("reset BN"); ``bn="repair"`` additionally
applies REPAIR (Jordan et al. 2023), ``bn="interpolate"`` keeps the interpolated statistics.
Permutation alignment (Git Re-Basin) lives in ``dynkit.analyses.permutation`` and is re-exported.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.analyses.permutation import (  # re-exported API, see __all__
    ACTIVATION_OBJECTIVES,
    Permutation,
    activation_matching,
    activation_similarity,
    apply_permutation,
    permutation_spec,
    weight_matching,
)
from dynkit.errors import InvalidArgumentError
from dynkit.evaluate import evaluate
from dynkit.models.graph import LINEAR_OPS, Model

__all__ = [
    "ACTIVATION_OBJECTIVES", "BARRIERS", "BN_MODES", "Permutation", "activation_matching",
    "activation_similarity", "apply_permutation", "barrier", "barrier_table", "interpolate",
    "layerwise_interpolate", "lerp", "permutation_spec", "repair", "reset_batchnorm",
    "weight_matching",
]

BARRIERS = ("linear", "mean")
BN_MODES = ("reset", "interpolate", "repair")


def _alpha_grid(alphas) -> np.ndarray:
    grid = np.linspace(0.0, 1.0, int(alphas)) if np.isscalar(alphas) else np.asarray(alphas, float)
    if grid.size == 0 or (np.isscalar(alphas) and int(alphas) < 2):
        raise InvalidArgumentError("alphas must be a grid of at least two points in [0, 1] "
                                   f"(or a count ≥ 2), got {alphas!r}")
    if not np.all(np.isfinite(grid)):
        raise InvalidArgumentError("alphas must be finite")
    return grid


def lerp(params_a, params_b, alpha: float):
    """Linear interpolation of two parameter trees, leaf by leaf:

        θ(α) = (1 − α) θ_A + α θ_B.

    Args:
        params_a, params_b: parameter trees of the same structure.
        alpha: the interpolation weight of ``θ_B``.

    Returns:
        The interpolated tree.

    Example:
        >>> lerp({"w": np.array([0.0, 2.0])}, {"w": np.array([4.0, 2.0])}, 0.25)
        {'w': array([1., 2.])}
    """
    return jax.tree_util.tree_map(lambda a, b: (1 - alpha) * a + alpha * b, params_a, params_b)


def reset_batchnorm(model: Model, params, x, max_samples: int = 2048):
    """Re-estimate every BatchNorm's running statistics on ``x`` ("reset BN").

    One train-mode pass over up to ``max_samples`` inputs with momentum 1 sets each running mean
    and (unbiased) variance to the batch statistics, which repairs the variance collapse of
    interpolated networks.

    Args:
        model: a dynkit ``Model`` (returned unchanged without BatchNorm).
        params: its parameters.
        x: inputs.
        max_samples: number of inputs used (the first ones).

    Returns:
        The parameters with new BatchNorm statistics.

    References:
        Jordan, Sedghi, Saukh, Entezari & Neyshabur 2023, "REPAIR: REnormalizing Permuted
        Activations for Interpolation Repair" (ICLR).

    Example:
        >>> from dynkit.models import GraphBuilder
        >>> g = GraphBuilder((3,))
        >>> h = g.batchnorm(g.dense("input", 4, name="fc"), name="bn")
        >>> model = g.build({"arch": "custom"}, g.dense(h, 2, name="head"), h)
        >>> params, x = model.init(jax.random.PRNGKey(0)), np.arange(12.0).reshape(4, 3)
        >>> new = reset_batchnorm(model, params, x)
        >>> pre_bn = model.intermediates(params, x, ["fc"])["fc"]
        >>> np.allclose(new["bn"]["mean"], pre_bn.mean(0), rtol=1e-5)
        True
    """
    if not model.has_batchnorm:
        return params
    _, new = model.apply_train(params, jnp.asarray(x[:max_samples]), momentum=1.0)
    return new


def interpolate(model: Model, params_a, params_b, x, y, alphas=21, *, x_test=None, y_test=None,
                loss: str = "cross_entropy", bn: str = "reset", bn_data=None) -> pd.DataFrame:
    """Loss and accuracy along the segment ``θ(α) = (1 − α) θ_A + α θ_B``.

    ``bn`` chooses how BatchNorm statistics are set at each α (module docstring): ``"reset"``
    (re-estimated on ``bn_data``), ``"repair"`` (REPAIR, then reset) or ``"interpolate"`` (kept
    interpolated).

    Args:
        model: the common architecture.
        params_a, params_b: the endpoints ``θ_A``, ``θ_B``.
        x, y: training inputs and labels (split ``train``).
        alphas: number of equally spaced points in ``[0, 1]`` (``>= 2``) or the grid itself.
        x_test, y_test: optional test split.
        loss: ``"cross_entropy"`` or ``"mse"``.
        bn: one of ``BN_MODES``.
        bn_data: inputs for the BatchNorm statistics (default ``x``).

    Returns:
        Tidy DataFrame with columns ``alpha, split, loss, accuracy, error``.

    References:
        Frankle, Dziugaite, Roy & Carbin 2020, "Linear mode connectivity and the lottery ticket
        hypothesis" (ICML); Jordan et al. 2023 (REPAIR, BN reset).

    Example:
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [8], 2)
        >>> pa, pb = model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1))
        >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 1])
        >>> curve = interpolate(model, pa, pb, x, y, alphas=3)
        >>> curve.alpha.tolist(), list(curve.columns)
        ([0.0, 0.5, 1.0], ['alpha', 'split', 'loss', 'accuracy', 'error'])
    """
    model.check_params(params_a, params_b)
    if bn not in BN_MODES:
        raise InvalidArgumentError(f"bn must be one of {BN_MODES}, got {bn!r}")
    grid = _alpha_grid(alphas)
    num_classes = int(np.max(y)) + 1 if loss == "cross_entropy" or np.ndim(y) == 1 else None
    splits = {"train": (x, y), **({"test": (x_test, y_test)} if x_test is not None else {})}
    rows = []
    stats_x = x if bn_data is None else bn_data
    for alpha in grid:
        p = lerp(params_a, params_b, float(alpha))
        if bn == "reset":
            p = reset_batchnorm(model, p, stats_x)
        elif bn == "repair":
            p = repair(model, params_a, params_b, p, float(alpha), stats_x)
        for r in evaluate(model, p, splits, loss=loss, num_classes=num_classes):
            rows.append({"alpha": float(alpha), **r, "error": 1 - r["accuracy"]})
    return pd.DataFrame(rows)


def barrier(curve: pd.DataFrame, *, definition: str = "linear", metric: str = "loss",
            split: str = "train") -> float:
    """Height of the barrier on an interpolation curve.

    * ``"linear"``: ``max_α [L(α) − ((1 − α) L(0) + α L(1))]`` (Frankle et al. 2020;
      Entezari et al. 2022);
    * ``"mean"``: ``max_α L(α) − ½ (L(0) + L(1))`` (Ainsworth et al. 2023).

    Args:
        curve: an :func:`interpolate` frame; its grid must contain α = 0 and α = 1.
        definition: one of ``BARRIERS``.
        metric: column of the curve, ``"loss"`` or ``"error"`` (error = 1 − accuracy).
        split: the split whose rows are used.

    Returns:
        The barrier, a float.

    References:
        Frankle et al. 2020, "Linear mode connectivity and the lottery ticket hypothesis"
        (ICML); Entezari, Sedghi, Saukh & Neyshabur 2022, "The role of permutation invariance in
        linear mode connectivity of neural networks" (ICLR); Ainsworth, Hayase & Srinivasa 2023,
        "Git Re-Basin: merging models modulo permutation symmetries" (ICLR).

    Example:
        >>> import pandas as pd
        >>> curve = pd.DataFrame({"alpha": [0.0, 0.5, 1.0], "split": "train",
        ...                       "loss": [1.0, 3.0, 2.0]})
        >>> barrier(curve), barrier(curve, definition="mean")
        (1.5, 1.5)
    """
    if definition not in BARRIERS:
        raise InvalidArgumentError(f"definition must be one of {BARRIERS}, got {definition!r}")
    c = curve[curve["split"] == split].sort_values("alpha")
    if c.empty:
        raise InvalidArgumentError(f"the curve has no rows for split {split!r}")
    a, v = c["alpha"].to_numpy(), c[metric].to_numpy()
    if a[0] != 0.0 or a[-1] != 1.0:
        raise InvalidArgumentError("a barrier needs the endpoints α = 0 and α = 1 on the grid")
    if definition == "linear":
        return float(np.max(v - ((1 - a) * v[0] + a * v[-1])))
    return float(np.max(v) - 0.5 * (v[0] + v[-1]))


def barrier_table(curve: pd.DataFrame, *, definition: str = "linear",
                  by: str | Sequence[str] = ()) -> pd.DataFrame:
    """Loss and error barriers of every curve in ``curve``, one row per (``by``…, split).

    ``curve`` holds one or more interpolation curves (``interpolate``'s columns, e.g. several
    alignments stacked with an ``alignment`` column named in ``by``); each group's barriers are
    ``barrier(group, split=s, definition=definition)`` for the loss and the error.

    Args:
        curve: tidy frame with ``alpha, split, loss, error`` and the ``by`` columns.
        definition: one of ``BARRIERS`` (see ``barrier``).
        by: column(s) that tell the curves apart (e.g. ``"alignment"``); ``()``: one curve.

    Returns:
        DataFrame with columns ``*by, split, loss_barrier, error_barrier``, rows in the order
        in which the groups and splits first appear in ``curve``.

    References:
        Frankle et al. 2020 (``"linear"``); Ainsworth et al. 2023 (``"mean"``).

    Example:
        >>> import pandas as pd
        >>> curve = pd.DataFrame({"alpha": [0.0, 0.5, 1.0], "split": "train",
        ...                       "loss": [1.0, 3.0, 2.0], "error": [0.1, 0.4, 0.2]})
        >>> barrier_table(curve)
           split  loss_barrier  error_barrier
        0  train           1.5           0.25
    """
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in curve]
    if missing:
        raise InvalidArgumentError(f"by names columns {missing} that the curve does not have; "
                                   f"columns: {list(curve.columns)}")
    rows = []
    for values, group in curve.groupby(keys + ["split"], sort=False):
        *labels, split = values
        rows.append({**dict(zip(keys, labels)), "split": split,
                     "loss_barrier": barrier(group, split=split, definition=definition),
                     "error_barrier": barrier(group, split=split, metric="error",
                                              definition=definition)})
    return pd.DataFrame(rows, columns=[*keys, "split", "loss_barrier", "error_barrier"])


def layerwise_interpolate(model: Model, params_a, params_b, x, y, alphas=11, *,
                          loss: str = "cross_entropy", groups: Sequence[str] | None = None,
                          bn: str = "reset") -> pd.DataFrame:
    """Layer-wise LMC (Adilova et al. 2024): interpolate one layer at a time, the rest at ``θ_A``.

    For each parameterized node ``l``: ``θ_l(α) = θ_A`` except
    ``θ_A^l → (1 − α) θ_A^l + α θ_B^l``; the per-layer barrier is :func:`barrier` of each
    layer's curve.

    Args:
        model: the common architecture.
        params_a, params_b: the endpoints.
        x, y: inputs and labels (train split).
        alphas: number of grid points or the grid.
        loss: ``"cross_entropy"`` or ``"mse"``.
        groups: node names to interpolate (default: every node with parameters).
        bn: one of ``BN_MODES``.

    Returns:
        DataFrame with the :func:`interpolate` columns and ``layer``.

    References:
        Adilova, Andriushchenko, Kamp, Fischer & Jaggi 2024, "Layer-wise linear mode
        connectivity" (ICLR).

    Example:
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [8], 2)
        >>> pa, pb = model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1))
        >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 1])
        >>> df = layerwise_interpolate(model, pa, pb, x, y, alphas=2)
        >>> df.layer.unique().tolist()
        ['fc0', 'head']
    """
    names = (list(groups) if groups is not None
             else [n.name for n in model.nodes if n.name in params_a])
    grid = _alpha_grid(alphas)
    frames = []
    for name in names:
        if name not in params_a:
            raise InvalidArgumentError(f"{name!r} is not a parameterized layer of {model.arch!r}")
        b_only = {k: (params_b[k] if k == name else v) for k, v in params_a.items()}
        curve = interpolate(model, params_a, b_only, x, y, grid, loss=loss, bn=bn)
        frames.append(curve.assign(layer=name))
    return pd.concat(frames, ignore_index=True)


def repair(model: Model, params_a, params_b, params_alpha, alpha: float, x,
           max_samples: int = 2048, *, correct_readout: bool = False):
    """REPAIR (Jordan et al. 2023): match the interpolated network's channel statistics.

    Every dense/conv/conv_transpose output channel of the interpolated network is rescaled so
    that its mean and std on ``x`` equal the interpolation of the endpoints',
    ``μ = (1 − α) μ_A + α μ_B``, ``σ = (1 − α) σ_A + α σ_B``. Layers are corrected in graph
    order (each correction changes the statistics downstream). Layers followed by BatchNorm are
    left to the BatchNorm reset that ends the procedure (it restores their statistics exactly).

    Args:
        model: the common architecture.
        params_a, params_b: the endpoints θ_A and θ_B.
        params_alpha: the interpolated parameters θ(α) to correct.
        alpha: the interpolation weight of θ_B.
        x: inputs on which the channel statistics are measured (the first ``max_samples``).
        max_samples: number of inputs used.
        correct_readout: also correct the read-out layer's output channels (the logits), after
            the BatchNorm reset, as the MLP notebook of Jordan et al. does (its ``fc2`` is
            wrapped like every hidden layer). Default ``False``: hidden layers only.

    Returns:
        dict: the corrected parameters (biases and weights of the corrected layers changed,
        BatchNorm statistics re-estimated).

    Raises:
        InvalidArgumentError: a layer to correct has no trainable bias.

    References:
        Jordan, Sedghi, Saukh, Entezari & Neyshabur 2023, "REPAIR: REnormalizing Permuted
        Activations for Interpolation Repair", Sec. 3 and the notebook
        ``Train-and-Permute-MNIST-MLP-NoBatchNorm``.

    Example:
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [8], 2)
        >>> pa, pb = model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1))
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.5]])
        >>> p = repair(model, pa, pb, lerp(pa, pb, 0.5), 0.5, x)
        >>> z = lambda q: np.asarray(model.intermediates(q, x, ["fc0"])["fc0"])
        >>> np.allclose(z(p).mean(0), (z(pa).mean(0) + z(pb).mean(0)) / 2, atol=1e-5)
        True
    """
    xs = jnp.asarray(x[:max_samples])
    feeds_bn = {n.inputs[0] for n in model.nodes if n.op == "batchnorm"}
    convs = [n for n in model.nodes if n.op in LINEAR_OPS
             and n.name != _readout(model) and n.name not in feeds_bn]
    last = [model.node(_readout(model))] if correct_readout else []
    names = [n.name for n in convs + last]
    stats_a = _channel_stats(model, params_a, xs, names)
    stats_b = _channel_stats(model, params_b, xs, names)
    p = {k: dict(v) for k, v in params_alpha.items()}
    for node in convs:
        _rescale_channels(model, node, p, xs, alpha, stats_a[node.name], stats_b[node.name])
    p = reset_batchnorm(model, p, xs)
    for node in last:
        _rescale_channels(model, node, p, xs, alpha, stats_a[node.name], stats_b[node.name])
    return p


def _rescale_channels(model, node, p, xs, alpha, stats_a, stats_b) -> None:
    """Fold ``gain · (out − μ_i) + μ_t`` into ``node``'s weight and bias in ``p`` (in place),
    with ``μ_t, σ_t`` interpolating the endpoints' statistics and ``gain = σ_t / σ_i``."""
    mu_i, sd_i = _channel_stats(model, p, xs, [node.name])[node.name]
    mu_t = (1 - alpha) * stats_a[0] + alpha * stats_b[0]
    sd_t = (1 - alpha) * stats_a[1] + alpha * stats_b[1]
    gain = sd_t / np.maximum(sd_i, 1e-12)
    _, b_mult = model.multipliers(node.name)
    if "b" not in p[node.name] or b_mult == 0:
        raise InvalidArgumentError(f"REPAIR needs a trainable bias at {node.name!r}; "
                                   "use bn='reset'")
    w, b = np.asarray(p[node.name]["w"]), np.asarray(p[node.name]["b"])
    p[node.name]["w"] = w * gain
    p[node.name]["b"] = b * gain + (mu_t - gain * mu_i) / b_mult


def _readout(model: Model) -> str:
    node = model.node(model.output)
    while node.op not in LINEAR_OPS:
        node = model.node(node.inputs[0])
    return node.name


def _channel_stats(model, params, x, names):
    shapes = model.node_shapes()
    out = model.intermediates(params, x, names)
    res = {}
    for n in names:
        z = np.asarray(out[n], np.float64).reshape(-1, shapes[n][-1])
        res[n] = (z.mean(0), z.std(0))
    return res
