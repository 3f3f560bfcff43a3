"""Densely connected networks (Huang, Liu, van der Maaten & Weinberger 2017, "Densely
Connected Convolutional Networks"): ``densenet`` (BC or not), torchvision's ``densenet121`` and
the CIFAR ``densenet40``.

Node names follow torchvision's ``DenseNet``: ``features.conv0/norm0/relu0/pool0``,
``features.denseblock{b}.denselayer{l}.norm1/relu1/conv1/norm2/relu2/conv2``,
``features.transition{b}.norm/relu/conv/pool``, ``features.norm5``, ``classifier``. The
non-module nodes are ``...denselayer{l}.cat`` (the block's running concatenation: the layer's
input channels, then its ``k`` new ones; torchvision concatenates all earlier outputs at once,
the same tensor), ``features.relu5`` and ``avgpool`` (the tapped feature node). Convolutions
have no bias; the layer input ``x`` of every dense layer is the concatenation of the block
input and all earlier layers' outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import GraphBuilder
from dynkit.models.cnn import image_shape
from dynkit.models.graph import Model

__all__ = ["STEMS", "densenet", "densenet40", "densenet121"]

STEMS = ("imagenet", "cifar")
_HE = math.sqrt(2.0)


def _bn_relu_conv(g: GraphBuilder, x: str, out_ch: int, kernel: int, p: str, i: str) -> str:
    h = g.batchnorm(x, name=f"{p}.norm{i}")
    h = g.relu(h, name=f"{p}.relu{i}")
    return g.conv(h, out_ch, kernel, name=f"{p}.conv{i}", padding=kernel // 2, bias=False,
                  W_std=_HE)


def densenet(
    block_config: Sequence[int] = (6, 12, 24, 16),
    num_classes: int = 1000,
    *,
    growth_rate: int = 32,
    num_init_features: int = 64,
    bn_size: int | None = 4,
    compression: float = 0.5,
    stem: str = "imagenet",
    input_shape: Sequence[int] = (224, 224, 3),
    parameterization: str = "standard",
) -> Model:
    """DenseNet (Huang et al. 2017) with torchvision's node names.

    Stem: ``imagenet`` is conv 7x7/2 (``num_init_features``) -> BN -> ReLU -> maxpool 3x3/2
    (padding 1); ``cifar`` is a single 3x3 conv. Then blocks of ``block_config[b]`` dense
    layers; a layer maps the running concatenation ``x`` to ``k = growth_rate`` new channels,
    ``BN-ReLU-Conv1x1(bn_size·k)-BN-ReLU-Conv3x3(k)`` (bottleneck "B", ``bn_size`` given) or
    ``BN-ReLU-Conv3x3(k)`` (``bn_size=None``), and ``x <- concat(x, new)``. Between blocks a
    transition ``BN-ReLU-Conv1x1(floor(compression · C))-AvgPool 2x2/2`` (``compression < 1``
    is "C"). At the end ``norm5`` -> ReLU -> global average pool (the feature node) ->
    ``classifier``. ``densenet((6, 12, 24, 16))`` with the defaults is torchvision's
    ``densenet121`` (7 978 856 parameters).

    Args:
        block_config: dense layers per block.
        num_classes: outputs of the read-out.
        growth_rate: ``k``, channels added per dense layer.
        num_init_features: channels of the stem convolution.
        bn_size: bottleneck width factor (``bn_size · k`` channels), or ``None`` for no
            bottleneck.
        compression: transition width factor ``θ`` in ``(0, 1]``.
        stem: one of ``STEMS``.
        input_shape: ``(H, W, C)``.
        parameterization: one of ``PARAMETERIZATIONS``.

    Returns:
        The ``Model``.

    Raises:
        InvalidArgumentError: an empty ``block_config``, a non-positive size, a compression
            outside ``(0, 1]`` or an unknown stem.

    References:
        Huang, Liu, van der Maaten & Weinberger 2017, "Densely connected convolutional
        networks" (CVPR).

    Example:
        >>> m = densenet((2, 2), 10, growth_rate=4, num_init_features=8, stem="cifar",
        ...              input_shape=(8, 8, 1))
        >>> m.feature, [n.name for n in m.nodes][-3:]
        ('avgpool', ['features.relu5', 'avgpool', 'classifier'])
    """
    blocks = [int(b) for b in block_config]
    if not blocks or min(blocks) < 1 or growth_rate < 1 or num_init_features < 1 or (
            bn_size is not None and bn_size < 1):
        raise InvalidArgumentError(
            f"densenet: block_config must be a non-empty list of positive ints and growth_rate, "
            f"num_init_features, bn_size positive; got block_config={block_config}, "
            f"growth_rate={growth_rate}, num_init_features={num_init_features}, "
            f"bn_size={bn_size}")
    if not 0 < compression <= 1:
        raise InvalidArgumentError(f"densenet: compression must be in (0, 1], got {compression}")
    if stem not in STEMS:
        raise InvalidArgumentError(f"densenet: stem must be one of {STEMS}, got {stem!r}")
    shape = image_shape(input_shape, "densenet")
    config = {"arch": "densenet", "block_config": blocks, "num_classes": int(num_classes),
              "growth_rate": int(growth_rate), "num_init_features": int(num_init_features),
              "bn_size": None if bn_size is None else int(bn_size),
              "compression": float(compression), "stem": stem, "input_shape": list(shape),
              "parameterization": parameterization}
    g = GraphBuilder(shape, parameterization)
    h = g.conv("input", num_init_features, 7 if stem == "imagenet" else 3, name="features.conv0",
               stride=2 if stem == "imagenet" else 1, padding=3 if stem == "imagenet" else 1,
               bias=False, W_std=_HE, role="input")
    if stem == "imagenet":
        h = g.batchnorm(h, name="features.norm0")
        h = g.relu(h, name="features.relu0")
        h = g.pool(h, "max", 3, name="features.pool0", stride=2, padding=1)
    for b, n_layers in enumerate(blocks, start=1):
        for j in range(1, n_layers + 1):
            p = f"features.denseblock{b}.denselayer{j}"
            new = h
            if bn_size is not None:
                new = _bn_relu_conv(g, new, bn_size * growth_rate, 1, p, "1")
            new = _bn_relu_conv(g, new, growth_rate, 3, p, "2" if bn_size is not None else "1")
            h = g.concat([h, new], name=f"{p}.cat", tap=j == n_layers)
        if b < len(blocks):
            p = f"features.transition{b}"
            h = g.batchnorm(h, name=f"{p}.norm")
            h = g.relu(h, name=f"{p}.relu")
            out_ch = math.floor(compression * g.shapes[h][-1])
            h = g.conv(h, out_ch, 1, name=f"{p}.conv", padding=0, bias=False, W_std=_HE)
            h = g.pool(h, "avg", 2, name=f"{p}.pool")
    h = g.batchnorm(h, name="features.norm5")
    h = g.relu(h, name="features.relu5")
    feature = g.global_avgpool(h, name="avgpool", tap=True)
    out = g.dense(feature, num_classes, name="classifier", role="readout")
    return g.build(config, out, feature)


def densenet121(num_classes: int = 1000, *, input_shape: Sequence[int] = (224, 224, 3),
                **kwargs) -> Model:
    """torchvision's DenseNet-121: blocks ``(6, 12, 24, 16)``, ``k = 32``, 64 stem channels,
    bottleneck 4k, compression 0.5 (DenseNet-BC); see :func:`densenet`.

    Args:
        num_classes: outputs of the read-out.
        input_shape: ``(H, W, C)``.
        **kwargs: ``parameterization`` of :func:`densenet`.

    Returns:
        The ``Model``.

    References:
        Huang, Liu, van der Maaten & Weinberger 2017, "Densely connected convolutional
        networks" (CVPR).

    Example:
        >>> densenet121().num_params()
        7978856
    """
    return densenet((6, 12, 24, 16), num_classes, input_shape=input_shape, **kwargs)


def densenet40(num_classes: int = 10, *, input_shape: Sequence[int] = (32, 32, 3),
               **kwargs) -> Model:
    """The classic CIFAR DenseNet-40 (``k = 12``) of Huang et al. (2017, Table 2): *non*-BC,
    three blocks of 12 layers ``BN-ReLU-Conv3x3(12)``, a 3x3 stem of 16 channels and
    transitions without compression (1 019 722 parameters with 10 classes).

    Args:
        num_classes: outputs of the read-out.
        input_shape: ``(H, W, C)``.
        **kwargs: ``parameterization`` of :func:`densenet`.

    Returns:
        The ``Model``.

    References:
        Huang, Liu, van der Maaten & Weinberger 2017, "Densely connected convolutional
        networks" (CVPR).

    Example:
        >>> densenet40().num_params()
        1019722
    """
    if "block_config" in kwargs:
        raise InvalidArgumentError("densenet40: block_config is fixed (12, 12, 12)")
    return densenet((12, 12, 12), num_classes, growth_rate=12, num_init_features=16,
                    bn_size=None, compression=1.0, stem="cifar", input_shape=input_shape,
                    **kwargs)
