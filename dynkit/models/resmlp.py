"""Residual MLPs with the branch scalings of depth-wise hyperparameter transfer.

``h_0 = fc_in(x)``, ``h_{l+1} = h_l + s · g_l · W_l φ(h_l)`` for ``l = 0..L-1``, then
``f(x) = head(φ(h_L))``, with a branch multiplier ``s`` (``1``, or ``1/sqrt(L)``: Depth-μP) and
optionally a ReZero gate ``g_l`` (a trainable scalar, 0 at init).
"""

from __future__ import annotations

import math

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import GraphBuilder
from dynkit.models.graph import Model

__all__ = ["BRANCH_SCALES", "branch_multiplier", "residual_mlp"]

#: ``branch_scale`` names: ``"none"`` (s = 1) and ``"depth"`` (s = 1/sqrt(L), Depth-μP).
BRANCH_SCALES = ("none", "depth")


def branch_multiplier(branch_scale: str | float, blocks: int) -> float:
    """The residual-branch multiplier ``s``: 1 (``"none"``), ``1/sqrt(L)`` (``"depth"``,
    Yang et al. 2023 "Tensor Programs VI"; Bordelon et al. 2023) or the given number.

    Example:
        >>> branch_multiplier("depth", 16), branch_multiplier("none", 16)
        (0.25, 1.0)
    """
    if isinstance(branch_scale, str):
        if branch_scale not in BRANCH_SCALES:
            raise InvalidArgumentError(f"branch_scale must be one of {BRANCH_SCALES} or a "
                                       f"number > 0, got {branch_scale!r}")
        return 1.0 / math.sqrt(blocks) if branch_scale == "depth" else 1.0
    if not float(branch_scale) > 0:
        raise InvalidArgumentError(f"branch_scale must be > 0, got {branch_scale}")
    return float(branch_scale)


def residual_mlp(
    in_dim: int,
    width: int,
    depth: int,
    out_dim: int,
    *,
    activation: str = "relu",
    parameterization: str = "standard",
    branch_scale: str | float = "none",
    rezero: bool = False,
    W_std: float = math.sqrt(2.0),
) -> Model:
    """Residual MLP of ``depth`` blocks ``h <- h + s · g · W φ(h)`` (one layer per branch, the
    block of Tensor Programs VI and of Bordelon et al. 2023).

    Nodes: ``fc_in``, per block ``l``: ``block{l}.act``, ``block{l}.fc``, ``block{l}.scale``
    (when ``s != 1``), ``block{l}.gate`` (ReZero), ``block{l}.add`` (tapped, the block output
    ``h_{l+1}``); then ``act_out`` (the features) and ``head``. Branch layers record
    ``branch_blocks = L`` so that ``dynkit.models.lr_scaling`` applies the Depth-μP learning
    rates; biases are off (``b = 0``) so that the variance recursion below is exact.

    At init with ReLU, He weights (``W_std = sqrt 2``) and ``s = 1``, the forward second
    moment ``q_l = E h_l^2`` obeys ``q_{l+1} = q_l (1 + s^2)`` per coordinate in expectation,
    i.e. ``q_L = q_0 (1 + s^2)^L``: exponential growth for ``s = 1``, bounded by ``e q_0`` for
    ``s = 1/sqrt(L)`` (Hanin & Rolnick 2018; Yang et al. 2023).

    Args:
        in_dim: input dimension.
        width: width ``n`` of every block.
        depth: number of residual blocks ``L >= 1``.
        out_dim: outputs.
        activation: ``"relu"`` or a name of ``dynkit.models.graph.ACTIVATIONS``.
        parameterization: one of ``PARAMETERIZATIONS``.
        branch_scale: ``"none"``, ``"depth"`` or a number (``branch_multiplier``).
        rezero: put a ReZero gate (Bachlechner et al. 2021) on every branch.
        W_std: weight scale of every layer.

    Returns:
        The ``Model``.

    Raises:
        InvalidArgumentError: bad depth, width or branch scale, or an unknown parameterization.

    Example:
        >>> m = residual_mlp(3, 8, 2, 1, branch_scale="depth", rezero=True)
        >>> [n.name for n in m.nodes if n.op in ("scale", "gate", "add")]
        ['block0.scale', 'block0.gate', 'block0.add', 'block1.scale', 'block1.gate', 'block1.add']
    """
    if int(depth) < 1 or int(width) < 1:
        raise InvalidArgumentError(f"residual_mlp: depth and width must be >= 1, got "
                                   f"{depth}, {width}")
    s = branch_multiplier(branch_scale, int(depth))
    config = {"arch": "residual_mlp", "in_dim": int(in_dim), "width": int(width),
              "depth": int(depth), "out_dim": int(out_dim), "activation": activation,
              "parameterization": parameterization, "branch_scale": branch_scale,
              "rezero": bool(rezero), "W_std": float(W_std)}
    g = GraphBuilder((in_dim,), parameterization)
    h = g.dense("input", width, name="fc_in", bias=False, W_std=W_std, role="input")
    for i in range(int(depth)):
        p = f"block{i}"
        a = g.relu(h, name=f"{p}.act") if activation == "relu" else g.act(
            h, activation, name=f"{p}.act")
        b = g.dense(a, width, name=f"{p}.fc", bias=False, W_std=W_std, branch_blocks=int(depth))
        if s != 1.0:
            b = g.scale(b, s, name=f"{p}.scale")
        if rezero:
            b = g.gate(b, name=f"{p}.gate")
        h = g.add_([h, b], name=f"{p}.add", tap=True)
    feature = (g.relu(h, name="act_out") if activation == "relu"
               else g.act(h, activation, name="act_out"))
    out = g.dense(feature, out_dim, name="head", bias=False, W_std=W_std, role="readout")
    return g.build(config, out, feature)
