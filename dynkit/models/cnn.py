"""Plain convolutional networks: ``conv -> relu -> pool`` stages and a dense read-out."""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.builder import GraphBuilder
from dynkit.models.graph import Model

__all__ = [
    "POOLS", "READOUTS", "cnn", "image_shape",
]

READOUTS = ("flatten", "global_avgpool")
POOLS = ("max", "avg", None)


def image_shape(input_shape: Sequence[int], arch: str) -> tuple[int, int, int]:
    """Validate an image ``input_shape`` ``(H, W, C)`` (NHWC without the batch axis).

    Args:
        input_shape: the shape to check.
        arch: architecture name, for the message.

    Returns:
        The shape as a tuple of ints.

    Raises:
        ShapeMismatchError: not three positive sizes.

    Example:
        >>> image_shape([8, 8, 1], "cnn")
        (8, 8, 1)
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeMismatchError(
            f"{arch}: input_shape must be (height, width, channels) of positive sizes, e.g. "
            f"(32, 32, 3) or (8, 8, 1); got {tuple(input_shape)}"
        )
    return shape


def cnn(
    input_shape: Sequence[int] = (32, 32, 3),
    channels: Sequence[int] = (32, 64),
    num_classes: int = 10,
    *,
    kernel: int = 3,
    pool: str | None = "max",
    readout: str = "flatten",
    bias: bool = True,
    parameterization: str = "standard",
    W_std: float = math.sqrt(2.0),
    b_std: float = 0.0,
) -> Model:
    """A plain CNN (LeCun et al. 1998 style).

    ``L`` stages ``conv{i} -> relu{i} [-> pool{i}]``, then ``flatten`` or ``avgpool`` (global
    average) and the dense read-out ``head``. Convolutions are ``kernel x kernel``, stride 1,
    zero padding ``kernel // 2`` (shape preserving for odd kernels); pools are 2x2 with stride 2
    (``pool=None``: no pooling). Weights follow ``parameterization`` (``dynkit.models.builder``);
    the default standard parameterization with ``W_std = sqrt(2)`` is He et al. (2015)
    initialization, ``w ~ N(0, 2 / fan_in)``; the read-out uses ``W_std = 1``. Taps: the
    ``relu{i}`` outputs. ``features`` is the input of ``head``.

    Args:
        input_shape: ``(H, W, C)``.
        channels: output channels of each stage.
        num_classes: outputs of ``head``.
        kernel: convolution kernel size.
        pool: ``"max"``, ``"avg"`` or ``None``.
        readout: ``"flatten"`` or ``"avgpool"``.
        bias: convolutions and read-out with biases.
        parameterization: one of ``PARAMETERIZATIONS``.
        W_std, b_std: weight and bias scales.

    Returns:
        The ``Model``.

    References:
        LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
        recognition"; He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers" (ICCV).

    Example:
        >>> model = cnn((8, 8, 1), (4, 8), 3)
        >>> model.num_params(), model.layer_names()
        (435, ['relu0', 'relu1'])
    """
    shape = image_shape(input_shape, "cnn")
    if readout not in READOUTS:
        raise InvalidArgumentError(f"cnn: readout must be one of {READOUTS}, got {readout!r}")
    if pool not in POOLS:
        raise InvalidArgumentError(f"cnn: pool must be one of {POOLS}, got {pool!r}")
    if not channels:
        raise InvalidArgumentError("cnn: channels must name at least one convolution width")
    config = {
        "arch": "cnn", "input_shape": list(shape), "channels": [int(c) for c in channels],
        "num_classes": int(num_classes), "kernel": int(kernel), "pool": pool, "readout": readout,
        "bias": bool(bias), "parameterization": parameterization, "W_std": float(W_std),
        "b_std": float(b_std),
    }
    g = GraphBuilder(shape, parameterization)
    h = "input"
    for i, c in enumerate(config["channels"]):
        h = g.conv(h, c, kernel, name=f"conv{i}", padding=kernel // 2, bias=bias, W_std=W_std,
                   b_std=b_std, role="input" if i == 0 else "hidden")
        h = g.relu(h, name=f"relu{i}", tap=True)
        if pool is not None:
            if min(g.shapes[h][:-1]) < 2:
                raise ShapeMismatchError(
                    f"cnn: input_shape {shape} is too small for {len(channels)} 2x2 pooling "
                    f"stages (feature map {g.shapes[h][:-1]} before pool{i}); use fewer "
                    "channels entries or pool=None"
                )
            h = g.pool(h, pool, 2, name=f"pool{i}")
    h = g.flatten(h) if readout == "flatten" else g.global_avgpool(h)
    out = g.dense(h, num_classes, name="head", bias=bias, W_std=1.0, b_std=b_std, role="readout")
    return g.build(config, out, h)
