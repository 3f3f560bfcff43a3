"""Fully connected networks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.models.builder import GraphBuilder
from dynkit.models.graph import Model

__all__ = [
    "mlp",
]


def mlp(
    in_dim: int,
    widths: Sequence[int],
    out_dim: int,
    *,
    activation: str = "relu",
    bias: bool = True,
    parameterization: str = "standard",
    W_std: float = math.sqrt(2.0),
    b_std: float = 0.0,
    alpha: float = 1.0,
) -> Model:
    """Multi-layer perceptron ``x -> act(fc0) -> ... -> head``, times an output multiplier α:

        f(x) = α · head(σ(fc_{L-1}(... σ(fc0(x))))),

    each layer parameterized as in ``dynkit.models.builder`` (standard, ``ntk``, ``meanfield``
    or ``mup``). Nodes are named ``fc0, act0, fc1, act1, ..., head`` (and ``alpha`` when
    α ≠ 1); ``features`` is the input of ``head``.

    Args:
        in_dim: input dimension.
        widths: hidden widths.
        out_dim: outputs of ``head``.
        activation: ``"relu"`` or a name of ``dynkit.models.graph.ACTIVATIONS``.
        bias: layers with biases.
        parameterization: one of ``PARAMETERIZATIONS``.
        W_std, b_std: weight and bias scales of every layer.
        alpha: output multiplier α (lazy training for large α, Chizat, Oyallon & Bach 2019).

    Returns:
        The ``Model``.

    References:
        Jacot, Gabriel & Hongler 2018 (``ntk``); Mei, Montanari & Nguyen 2018 (``meanfield``);
        Yang & Hu 2021 (``mup``); Chizat, Oyallon & Bach 2019, "On lazy training in
        differentiable programming" (``alpha``).

    Example:
        >>> model = mlp(3, [4, 4], 2, activation="tanh")
        >>> [n.name for n in model.nodes]
        ['input', 'fc0', 'act0', 'fc1', 'act1', 'head']
    """
    config = {"arch": "mlp", "in_dim": int(in_dim), "widths": [int(w) for w in widths],
              "out_dim": int(out_dim), "activation": activation, "bias": bias,
              "parameterization": parameterization, "W_std": float(W_std), "b_std": float(b_std),
              "alpha": float(alpha)}
    g = GraphBuilder((in_dim,), parameterization)
    h = "input"
    for i, w in enumerate(widths):
        role = "input" if i == 0 else "hidden"
        h = g.dense(h, w, name=f"fc{i}", bias=bias, W_std=W_std, b_std=b_std, role=role)
        if activation == "relu":
            h = g.relu(h, name=f"act{i}", tap=True)
        else:
            h = g.act(h, activation, name=f"act{i}", tap=True)
    feature = h
    out = g.dense(h, out_dim, name="head", bias=bias, W_std=W_std, b_std=b_std,
                  role="readout" if widths else "input")
    if alpha != 1.0:
        out = g.scale(out, alpha, name="alpha")
    return g.build(config, out, feature)
