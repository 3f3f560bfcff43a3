"""Stability of SGD solutions: instability analysis and dropout stability.

* Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020): train a parent for ``k`` steps,
  spawn two children that finish training with different SGD noise (data order), and report
  the barrier between the children as a function of ``k``.
* Dropout stability and piecewise-linear connectivity (Shevchenko & Mondelli 2020): keep ``k``
  of the ``N`` units of a hidden layer, scale their outgoing weights by ``N/k``, and measure the
  change in loss; two dropout-stable two-layer networks are joined by a piecewise-linear path
  whose loss never exceeds the dropout losses of the halves.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.analyses.lmc import barrier_table, interpolate, lerp
from dynkit.analyses.permutation import permutation_spec
from dynkit.errors import InvalidArgumentError
from dynkit.evaluate import logits, score
from dynkit.losses import loss_fn
from dynkit.models.graph import Model

__all__ = [
    "drop_units", "dropout_path", "dropout_stability", "instability",
]


def instability(model: Model, data, spawn_steps: Sequence[int], total_steps: int, *,
                seed: int = 0, child_seeds: tuple[int, int] = (1, 2), alphas: int = 11,
                progress: bool = False, **fit_kwargs) -> pd.DataFrame:
    """Instability analysis (Frankle et al. 2020): barrier between two children spawned at ``k``.

    The parent starts at ``model.init(PRNGKey(seed))`` and is trained (data order ``seed``) in
    consecutive pieces up to each ``k``; from ``θ_k`` two children train for
    ``total_steps − k`` steps with data orders ``child_seeds``, and the ``"linear"`` barrier
    (:func:`dynkit.analyses.lmc.barrier`) between them is measured. Optimizer state starts fresh
    in every piece, so plain SGD (the default) reproduces the paper's setting exactly.

    Args:
        model: the architecture.
        data: a ``dynkit.data.Dataset``.
        spawn_steps: the steps ``k`` in ``[0, total_steps]``.
        total_steps: training steps of parent plus child.
        seed: initialization and parent data-order seed.
        child_seeds: data-order seeds of the two children.
        alphas: interpolation grid size.
        progress: a progress bar over the spawn steps.
        **fit_kwargs: keyword arguments of ``dynkit.train.fit`` (``optimizer="sgd"`` by default).

    Returns:
        DataFrame with columns ``k, split, barrier_loss, barrier_error``.

    References:
        Frankle, Dziugaite, Roy & Carbin 2020, "Linear mode connectivity and the lottery ticket
        hypothesis" (ICML).

    Example:
        >>> import dynkit as dk
        >>> data = dk.data.load("gaussian_mixture", n_train=16, n_test=8)
        >>> df = instability(dk.models.mlp(2, [8], 3), data, [0, 1], 2, alphas=3, batch_size=8)
        >>> df.k.tolist(), list(df.columns)
        ([0, 0, 1, 1], ['k', 'split', 'barrier_loss', 'barrier_error'])
    """
    from dynkit.train import fit

    ks = sorted(int(k) for k in spawn_steps)
    if not ks or ks[0] < 0 or ks[-1] > total_steps:
        raise InvalidArgumentError(f"spawn_steps must lie in [0, total_steps={total_steps}], "
                                   f"got {ks}")
    fit_kwargs.setdefault("optimizer", "sgd")
    params, done, rows = model.init(jax.random.PRNGKey(seed)), 0, []
    for k in tqdm(ks, desc="instability", unit="spawn step", disable=not progress):
        if k > done:
            params = fit(model, data, params=params, steps=k - done, seed=seed + done,
                         progress=False, **fit_kwargs).params
            done = k
        children = [fit(model, data, params=params, steps=total_steps - k, seed=s,
                        progress=False, **fit_kwargs).params for s in child_seeds]
        curve = interpolate(model, *children, data.x_train, data.y_train, alphas,
                            x_test=data.x_test, y_test=data.y_test)
        table = barrier_table(curve).rename(columns={"loss_barrier": "barrier_loss",
                                                     "error_barrier": "barrier_error"})
        rows += [{"k": k, **r} for r in table.to_dict("records")]
    return pd.DataFrame(rows)


def _outgoing(model: Model, layer: str):
    """The permutation group of ``layer``'s units and the axes of its outgoing weights."""
    spec = permutation_spec(model)
    for g, members in spec.members.items():
        if layer in members:
            return g, spec.sizes[g], [a for a in spec.groups[g] if a.param == "w" and a.axis == -2]
    raise InvalidArgumentError(
        f"{layer!r} is not a hidden layer of {model.arch!r}; hidden layers: "
        f"{sorted(m for ms in spec.members.values() for m in ms)}")


def drop_units(model: Model, params, layer: str, keep: np.ndarray):
    """Keep the units ``keep`` of a hidden layer, rescaled (Shevchenko & Mondelli 2020).

    The outgoing weights of the other units are zeroed and those of the ``k`` kept ones
    multiplied by ``N/k`` (``N`` units in the layer).

    Args:
        model: the architecture.
        params: its parameters.
        layer: a hidden layer (a member of a permutation group of ``permutation_spec``).
        keep: indices of the kept units.

    Returns:
        The new parameters (a copy).

    References:
        Shevchenko & Mondelli 2020, "Landscape connectivity and dropout stability of SGD
        solutions for over-parameterized neural networks" (ICML).

    Example:
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [4], 2)
        >>> pa, pb = model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1))
        >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 1])
        >>> p = drop_units(model, pa, "fc0", [0, 1])
        >>> w, w0 = np.asarray(p["head"]["w"]), np.asarray(pa["head"]["w"])
        >>> np.allclose(w[:2], 2 * w0[:2]), float(abs(w[2:]).max())
        (True, 0.0)
    """
    _, n, axes = _outgoing(model, layer)
    keep = np.asarray(keep)
    if keep.size == 0 or keep.max() >= n or keep.min() < 0:
        raise InvalidArgumentError(f"keep must index units of {layer!r} (0..{n - 1})")
    scale = np.zeros(n)
    scale[keep] = n / len(np.unique(keep))
    out = {k: dict(v) for k, v in params.items()}
    for ax in axes:
        w = np.asarray(out[ax.node]["w"])
        shape = [1] * w.ndim
        shape[ax.axis] = w.shape[ax.axis]
        out[ax.node]["w"] = w * ax.expand(scale, 1.0).reshape(shape)
    return out


def dropout_stability(model: Model, params, x, y, layer: str, ks: Sequence[int], *,
                      draws: int = 5, seed: int = 0, loss: str = "cross_entropy") -> pd.DataFrame:
    """Dropout stability (Shevchenko & Mondelli 2020):

        Δloss(k) = L(θ with k of N units of ``layer`` kept, rescaled by N/k) − L(θ),

    averaged over ``draws`` random subsets.

    Args:
        model: the architecture.
        params: its parameters.
        x, y: inputs and labels.
        layer: the hidden layer.
        ks: numbers of kept units, each in ``[1, N]``.
        draws: random subsets per ``k``.
        seed: seed of the subsets.
        loss: ``"cross_entropy"`` or ``"mse"``.

    Returns:
        DataFrame with columns ``k, N, loss, delta_loss, delta_loss_std``.

    References:
        Shevchenko & Mondelli 2020, "Landscape connectivity and dropout stability of SGD
        solutions for over-parameterized neural networks" (ICML).

    Example:
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [4], 2)
        >>> pa, pb = model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1))
        >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 1])
        >>> df = dropout_stability(model, pa, x, y, "fc0", [4], draws=1)
        >>> bool(abs(df.delta_loss[0]) < 1e-6)     # keeping all units changes nothing
        True
    """
    _, n, _ = _outgoing(model, layer)
    task_loss = loss_fn(loss, int(np.max(y)) + 1 if np.ndim(y) == 1 else None)
    base = _loss(model, params, x, y, task_loss)
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        if not 1 <= int(k) <= n:
            raise InvalidArgumentError(f"k must lie in [1, {n}], got {k}")
        losses = [_loss(model, drop_units(model, params, layer,
                                          rng.choice(n, int(k), replace=False)),
                        x, y, task_loss) for _ in range(draws)]
        rows.append({"k": int(k), "N": n, "loss": float(np.mean(losses)),
                     "delta_loss": float(np.mean(losses) - base),
                     "delta_loss_std": float(np.std(losses))})
    return pd.DataFrame(rows)


def dropout_path(model: Model, params_a, params_b, x, y, *, points: int = 11,
                 loss: str = "cross_entropy") -> pd.DataFrame:
    """Loss along the piecewise-linear path of Shevchenko & Mondelli (2020) between two two-layer
    networks (``mlp`` with one hidden layer ``fc0``), through their halves:

    1. A → A₁: keep A's first half (outgoing weights ×2, the rest 0); 2. give A's silent second
    half B's second-half input weights (the function does not change); 3. move the read-out from
    A's first half to B's second half (×2); 4. give the now silent first half B's first-half
    input weights, reaching B₂ (B with its second half kept); 5. B₂ → B. Segments 1, 3 and 5
    change only the read-out weights, in which the loss is convex, so their loss never exceeds
    that of their endpoints.

    Args:
        model: an ``mlp`` with exactly one hidden layer.
        params_a, params_b: the two networks.
        x, y: inputs and labels.
        points: grid points on each of segments 1, 3 and 5.
        loss: ``"cross_entropy"`` or ``"mse"``.

    Returns:
        DataFrame with columns ``segment, t, loss`` (segments 2 and 4 have constant loss and one
        row each).

    References:
        Shevchenko & Mondelli 2020, "Landscape connectivity and dropout stability of SGD
        solutions for over-parameterized neural networks" (ICML).

    Example:
        >>> from dynkit.models import mlp
        >>> model = mlp(2, [4], 2)
        >>> pa, pb = model.init(jax.random.PRNGKey(0)), model.init(jax.random.PRNGKey(1))
        >>> x, y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 1])
        >>> df = dropout_path(model, pa, pb, x, y, points=3)
        >>> df.segment.tolist()
        [1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5]
    """
    if model.arch != "mlp" or len(model.config["widths"]) != 1:
        raise InvalidArgumentError("dropout_path is defined for two-layer networks: "
                                   "an mlp with exactly one hidden layer")
    n = model.config["widths"][0]
    first, second = np.arange(n // 2), np.arange(n // 2, n)
    a1 = drop_units(model, params_a, "fc0", first)
    b2 = drop_units(model, params_b, "fc0", second)
    hidden = _rows_from(params_a["fc0"], params_b["fc0"], second)  # A's first half, B's second
    middle_start, middle_end = {**a1, "fc0": hidden}, {**b2, "fc0": hidden}
    task_loss = loss_fn(loss, int(np.max(y)) + 1 if np.ndim(y) == 1 else None)
    ts = np.linspace(0, 1, points)
    rows = []
    for segment, (p, q) in enumerate([(params_a, a1), (middle_start, middle_end),
                                      (b2, params_b)], start=1):
        for t in ts:
            rows.append({"segment": 2 * segment - 1, "t": float(t),
                         "loss": _loss(model, lerp(p, q, float(t)), x, y, task_loss)})
    rows.append({"segment": 2, "t": 0.0,
                 "loss": _loss(model, middle_start, x, y, task_loss)})
    rows.append({"segment": 4, "t": 0.0,
                 "loss": _loss(model, middle_end, x, y, task_loss)})
    return pd.DataFrame(rows).sort_values(["segment", "t"], ignore_index=True)


def _rows_from(dst: dict, src: dict, units: np.ndarray) -> dict:
    """Copy the incoming weights (and biases) of ``units`` from layer params ``src``."""
    out = {k: np.array(v) for k, v in dst.items()}
    out["w"][:, units] = np.asarray(src["w"])[:, units]
    if "b" in out:
        out["b"][units] = np.asarray(src["b"])[units]
    return out


def _loss(model, params, x, y, task_loss) -> float:
    """Loss on ``(x, y)`` with the shared compiled evaluator."""
    return score(logits(model, params, x), y, task_loss)[0]
