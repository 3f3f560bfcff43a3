"""Per-layer learning-rate multipliers required by μP and Depth-μP.

``lr_multipliers(model, optimizer)`` is a pytree like the model's trainable parameters: the
factor by which each leaf's learning rate multiplies the global ``lr`` (``fit`` applies it
with ``lr_multipliers=True``). With ``r = n / base_width`` the width ratio of the layer
(``n`` = ``fan_out`` for input layers, ``fan_in`` for hidden and read-out layers, counted in
units/channels) and the multiplier-form μP of ``dynkit.models.builder``:

=========  =====================  ================  =========================
optimizer  layer                  weight            bias
=========  =====================  ================  =========================
SGD        input / hidden         1                 ``r``
SGD        read-out               1                 1
Adam       input                  ``r^(-1/2)``      1
Adam       hidden                 ``r^(-1)``        1
Adam       read-out               ``r^(-1/2)``      1
=========  =====================  ================  =========================

These are Table 3 of Yang et al. 2022 ("Tensor Programs V"): a stored weight ``w`` with
forward multiplier ``m`` has effective weight ``W = m w``, so SGD with rate ``η_w`` moves ``W``
at rate ``m² η_w`` and Adam (whose steps are scale-free) moves it by ``m η_w`` per
coordinate; with the ``m`` of ``builder`` this reproduces the table's ``η·fan_out`` (input and
biases), ``η`` (hidden) and ``η/fan_in`` (read-out) for SGD and ``η``, ``η/fan_in``,
``η/fan_in`` for Adam. The other parameterizations (``standard``, ``ntk``, ``meanfield``) are
defined with one global rate: every multiplier is 1.

Depth-μP (Yang et al. 2023, "Tensor Programs VI"; Bordelon et al. 2023): weights in a residual
branch of an ``L``-block network whose branches carry ``1/sqrt(L)`` (``branch_blocks = L`` in
the node) get an extra ``L^(-1/2)`` under Adam and none under SGD. Normalization parameters and
ReZero gates keep 1.
"""

from __future__ import annotations

from dynkit.errors import InvalidArgumentError
from dynkit.models.graph import LINEAR_OPS, Model, Params

__all__ = ["OPTIMIZER_FAMILIES", "lr_multipliers", "optimizer_family"]

#: optimizer name (``dynkit.train.OPTIMIZERS``) -> the family whose μP rates it follows
OPTIMIZER_FAMILIES = {"sgd": "sgd", "momentum": "sgd", "adam": "adam", "adamw": "adam"}


def optimizer_family(optimizer: str) -> str:
    """``"sgd"`` or ``"adam"``: which column of the μP table ``optimizer`` follows.

    Example:
        >>> optimizer_family("adamw")
        'adam'
    """
    if optimizer not in OPTIMIZER_FAMILIES:
        raise InvalidArgumentError(f"optimizer must be one of {sorted(OPTIMIZER_FAMILIES)}, "
                                   f"got {optimizer!r}")
    return OPTIMIZER_FAMILIES[optimizer]


def _width(attrs, role: str) -> int:
    fan_in = attrs["in_dim"] if "in_dim" in attrs else attrs["in_ch"]
    fan_out = attrs["out_dim"] if "out_dim" in attrs else attrs["out_ch"]
    return int(fan_out if role == "input" else fan_in)


def _node_multipliers(attrs, family: str, base_width: float) -> tuple[float, float]:
    role = attrs.get("role")
    w_mult = b_mult = 1.0
    if role is not None:  # mup
        r = _width(attrs, role) / base_width
        if family == "sgd":
            b_mult = 1.0 if role == "readout" else r
        else:
            w_mult = r ** -1.0 if role == "hidden" else r ** -0.5
    blocks = attrs.get("branch_blocks")
    if blocks and family == "adam":
        w_mult *= blocks ** -0.5
    return w_mult, b_mult


def lr_multipliers(model: Model, optimizer: str = "sgd", base_width: float = 1.0) -> Params:
    """The per-parameter learning-rate multipliers of ``model`` (table in the module doc).

    Args:
        model: the network.
        optimizer: an optimizer name of ``dynkit.train.OPTIMIZERS``.
        base_width: the width at which the multipliers are 1 (the "base shapes" of μP: tune
            the rate there, reuse it at every width).

    Returns:
        ``{node: {param: float}}`` over the trainable parameters (no BatchNorm statistics).

    Raises:
        InvalidArgumentError: an unknown optimizer or ``base_width <= 0``.

    References:
        Yang et al. 2022, "Tensor Programs V: tuning large neural networks via zero-shot
        hyperparameter transfer" (Table 3); Yang, Yu, Zhu & Hayou 2023, "Tensor Programs VI:
        feature learning in infinite-depth neural networks"; Bordelon, Noci, Li, Hanin &
        Pehlevan 2023, "Depthwise hyperparameter transfer in residual networks".

    Example:
        >>> from dynkit.models import mlp
        >>> lr_multipliers(mlp(3, [64], 2, parameterization="mup", bias=False), "adam")
        {'fc0': {'w': 0.125}, 'head': {'w': 0.125}}
    """
    family = optimizer_family(optimizer)
    if not float(base_width) > 0:
        raise InvalidArgumentError(f"base_width must be > 0, got {base_width}")
    out: Params = {}
    for name, shapes in model.param_shapes().items():
        node = model.node(name)
        w_mult, b_mult = (_node_multipliers(node.attrs, family, float(base_width))
                          if node.op in LINEAR_OPS else (1.0, 1.0))
        out[name] = {k: (b_mult if k == "b" else w_mult) for k in shapes
                     if k not in ("mean", "var")}
    return out
