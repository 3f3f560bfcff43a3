"""Wide residual networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

Pre-activation WRN-``depth``-``k`` with node names mirroring xternalz/WideResNet-pytorch
(``/work/notes/naming.md``): ``conv1``, ``block{1,2,3}.layer.{j}.{bn1, conv1, bn2, conv2,
convShortcut}``, final ``bn1``, ``relu``, ``avgpool``, ``fc``. Dropout is not modeled (it is
the identity in evaluation and 0 by default there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import GraphBuilder
from dynkit.models.cnn import image_shape
from dynkit.models.graph import Model

__all__ = [
    "HE_STD", "wide_block", "wrn",
]

HE_STD = math.sqrt(2.0)


def wide_block(g: GraphBuilder, x: str, out_ch: int, stride: int, prefix: str) -> str:
    """Pre-activation block of Zagoruyko & Komodakis (2016), exactly as xternalz's ``BasicBlock``.

    ``a = relu(bn1(x))``, ``r = conv2(relu(bn2(conv1(a))))`` and the output ``x + r`` when
    in == out channels, else ``convShortcut(a) + r`` (the 1x1 projection sees the pre-activated
    input).

    Args:
        g: the builder.
        x: name of the input node.
        out_ch: output channels.
        stride: stride of ``conv1`` (and of the projection); 1 when the channels are kept.
        prefix: node-name prefix (e.g. ``"block1.layer.0"``).

    Returns:
        The name of the block's output node.

    Raises:
        InvalidArgumentError: a stride with an identity shortcut.

    References:
        Zagoruyko & Komodakis 2016, "Wide residual networks" (BMVC).

    Example:
        >>> g = GraphBuilder((8, 8, 4))
        >>> out = wide_block(g, "input", 8, 2, "block1.layer.0")
        >>> out, g.shapes[out]
        ('block1.layer.0.add', (4, 4, 8))
    """
    a = g.batchnorm(x, name=f"{prefix}.bn1")
    a = g.relu(a, name=f"{prefix}.relu1")
    h = g.conv(a, out_ch, 3, name=f"{prefix}.conv1", stride=stride, padding=1, bias=False,
               W_std=HE_STD)
    h = g.batchnorm(h, name=f"{prefix}.bn2")
    h = g.relu(h, name=f"{prefix}.relu2")
    h = g.conv(h, out_ch, 3, name=f"{prefix}.conv2", stride=1, padding=1, bias=False,
               W_std=HE_STD)
    if g.shapes[x][-1] == out_ch:
        if stride != 1:
            raise InvalidArgumentError(
                f"wrn: block {prefix} keeps {out_ch} channels but has stride {stride}; the "
                "identity shortcut cannot downsample")
        s = x
    else:
        s = g.conv(a, out_ch, 1, name=f"{prefix}.convShortcut", stride=stride, padding=0,
                   bias=False, W_std=HE_STD)
    return g.add_([s, h], name=f"{prefix}.add", tap=True)


def wrn(
    depth: int = 28,
    widen_factor: int = 10,
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    parameterization: str = "standard",
) -> Model:
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016, Table 1).

    ``n = (depth - 4) / 6`` blocks per group; ``conv1`` (3x3, 16) -> ``block1`` (16k,
    stride 1) -> ``block2`` (32k, stride 2) -> ``block3`` (64k, stride 2) -> ``bn1`` ->
    ``relu`` -> global average pool -> ``fc``. (xternalz pools with a fixed 8x8 window, which
    equals the global pool for 32x32 inputs.) Convolutions have no bias, He initialization.

    Args:
        depth: ``6n + 4`` (10, 16, 22, 28, 40, ...).
        widen_factor: ``k``.
        num_classes: outputs of ``fc``.
        input_shape: ``(H, W, C)``.
        parameterization: one of ``PARAMETERIZATIONS``.

    Returns:
        The ``Model``.

    References:
        Zagoruyko & Komodakis 2016, "Wide residual networks" (BMVC).

    Example:
        >>> wrn(28, 10).num_params()    # WRN-28-10: 36.5M
        36479194
    """
    if (depth - 4) % 6 or depth < 10:
        raise InvalidArgumentError(
            f"wrn: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40), got {depth}")
    if widen_factor < 1:
        raise InvalidArgumentError(f"wrn: widen_factor must be >= 1, got {widen_factor}")
    shape = image_shape(input_shape, "wrn")
    config = {"arch": "wrn", "depth": int(depth), "widen_factor": int(widen_factor),
              "num_classes": int(num_classes), "input_shape": list(shape),
              "parameterization": parameterization}
    n = (depth - 4) // 6
    g = GraphBuilder(shape, parameterization)
    h = g.conv("input", 16, 3, name="conv1", padding=1, bias=False, W_std=HE_STD, role="input")
    for group, (mult, stride) in enumerate(zip((16, 32, 64), (1, 2, 2)), start=1):
        for j in range(n):
            h = wide_block(g, h, mult * widen_factor, stride if j == 0 else 1,
                           f"block{group}.layer.{j}")
    h = g.batchnorm(h, name="bn1")
    h = g.relu(h, name="relu")
    feature = g.global_avgpool(h, name="avgpool")
    out = g.dense(feature, num_classes, name="fc", W_std=1.0, role="readout")
    return g.build(config, out, feature)
