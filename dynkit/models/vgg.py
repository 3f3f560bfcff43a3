"""VGG networks (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale
Image Recognition"), torchvision layout: ``features.{i}`` then ``classifier.{i}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import GraphBuilder
from dynkit.models.cnn import image_shape
from dynkit.models.graph import Model

__all__ = [
    "CONFIGS", "vgg", "vgg11",
]

#: torchvision's configurations ("A" = VGG-11, "B" = 13, "D" = 16, "E" = 19); "M" = maxpool.
CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


def vgg(
    depth: int = 11,
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    batchnorm: bool = False,
    classifier_width: int = 512,
    parameterization: str = "standard",
) -> Model:
    """VGG-``depth`` (Simonyan & Zisserman 2015, Table 1) with torchvision's module indices.

    ``features.{i}``: per entry of the configuration a 3x3 conv (padding 1, with bias),
    [BatchNorm], ReLU, or a 2x2/2 maxpool; indices count as in torchvision's
    ``make_layers``. A maxpool whose input is already smaller than 2x2 is left out (its index
    stays unused), so small images such as 8x8 digits work; from 32x32 up every pool is kept.

    Classifier (a parameter, documented deviation): the final feature map is flattened
    (``flatten``; no adaptive 7x7 average pool) into ``classifier.0`` (dense,
    ``classifier_width``) -> ``classifier.1`` relu -> ``classifier.3`` (dense) -> ``classifier.4``
    relu -> ``classifier.6`` (read-out); dropout (indices 2, 5) is the identity at evaluation and
    not modeled. With ``input_shape=(224, 224, 3)`` and ``classifier_width=4096`` this is
    torchvision's ``vgg{depth}[_bn]`` exactly. Taps: every relu output.

    Args:
        depth: 11, 13, 16 or 19.
        num_classes: outputs of the read-out.
        input_shape: ``(H, W, C)``.
        batchnorm: a BatchNorm after every convolution (torchvision's ``vgg*_bn``).
        classifier_width: width of the two hidden dense layers.
        parameterization: one of ``PARAMETERIZATIONS``.

    Returns:
        The ``Model``.

    References:
        Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
        recognition" (ICLR).

    Example:
        >>> model = vgg(11, input_shape=(8, 8, 1))
        >>> model.num_params(), model.feature
        (9749770, 'classifier.4')
    """
    if depth not in CONFIGS:
        raise InvalidArgumentError(f"vgg: depth must be one of {sorted(CONFIGS)}, got {depth}")
    shape = image_shape(input_shape, "vgg")
    config = {"arch": "vgg", "depth": int(depth), "num_classes": int(num_classes),
              "input_shape": list(shape), "batchnorm": bool(batchnorm),
              "classifier_width": int(classifier_width), "parameterization": parameterization}
    g = GraphBuilder(shape, parameterization)
    h, i = "input", 0
    for v in CONFIGS[depth]:
        if v == "M":
            if min(g.shapes[h][:-1]) >= 2:
                h = g.pool(h, "max", 2, name=f"features.{i}")
            i += 1
            continue
        h = g.conv(h, v, 3, name=f"features.{i}", padding=1, W_std=math.sqrt(2.0),
                   role="input" if i == 0 else "hidden")
        i += 1
        if batchnorm:
            h = g.batchnorm(h, name=f"features.{i}")
            i += 1
        h = g.relu(h, name=f"features.{i}", tap=True)
        i += 1
    h = g.flatten(h)
    h = g.dense(h, classifier_width, name="classifier.0", W_std=math.sqrt(2.0))
    h = g.relu(h, name="classifier.1", tap=True)
    h = g.dense(h, classifier_width, name="classifier.3", W_std=math.sqrt(2.0))
    feature = g.relu(h, name="classifier.4", tap=True)
    out = g.dense(feature, num_classes, name="classifier.6", W_std=1.0, role="readout")
    return g.build(config, out, feature)


def vgg11(
    input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10, *, batchnorm: bool = False,
    **kwargs,
) -> Model:
    """VGG-11 (configuration "A", Simonyan & Zisserman 2015); see :func:`vgg`.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: outputs of the read-out.
        batchnorm: a BatchNorm after every convolution.
        **kwargs: ``classifier_width``, ``parameterization`` of :func:`vgg`.

    Returns:
        The ``Model``.

    References:
        Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
        recognition" (ICLR).

    Example:
        >>> vgg11().num_params()
        9750922
    """
    return vgg(11, num_classes, input_shape=input_shape, batchnorm=batchnorm, **kwargs)
