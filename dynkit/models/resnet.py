"""Residual networks (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image
Recognition"): the CIFAR family ``resnet{20,32,44,56,110}`` and the torchvision ImageNet
family ``resnet{18,34,50,101,152}``.

Node names mirror the PyTorch modules (``/work/notes/naming.md``): CIFAR nets follow
akamaster/pytorch_resnet_cifar10 with option-B (projection) shortcuts, ImageNet nets follow
torchvision exactly (Bottleneck v1.5: stride on the 3x3 ``conv2``). Convolutions have no bias
and explicit torch padding ``k // 2``. Non-parameter nodes of block ``p`` are ``p.relu1``,
``p.add``, ``p.relu2`` (BasicBlock) or ``p.relu1, p.relu2, p.add, p.relu3`` (Bottleneck); the
block output (its last relu) is tapped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.errors import InvalidArgumentError
from dynkit.models.builder import GraphBuilder
from dynkit.models.cnn import image_shape
from dynkit.models.graph import Model
from dynkit.models.resmlp import branch_multiplier

__all__ = [
    "CIFAR_DEPTHS",
    "HE_STD",
    "IMAGENET_LAYERS",
    "basic_block",
    "bottleneck_block",
    "cifar_resnet",
    "conv_bn",
    "resnet",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet34",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet101",
    "resnet110",
    "resnet152",
]

HE_STD = math.sqrt(2.0)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
#: torchvision depth -> (block type, blocks per stage)
IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def conv_bn(g: GraphBuilder, x: str, out_ch: int, kernel: int, stride: int, conv: str, bn: str,
            role: str = "hidden", norm: bool = True) -> str:
    """``bn(conv(x))``: a bias-free convolution, then BatchNorm.

    The ``kernel x kernel`` convolution has torch padding ``kernel // 2`` and He initialization
    ``w ~ N(0, 2 / fan_in)``.

    Args:
        g: the builder.
        x: name of the input node.
        out_ch: output channels.
        kernel: kernel size.
        stride: stride.
        conv, bn: names of the conv and BatchNorm nodes.
        role: ``"input"``, ``"hidden"`` or ``"readout"`` (for the parameterization).
        norm: with BatchNorm (else the convolution alone, ``bn`` unused).

    Returns:
        The name of the BatchNorm node (of the conv node without ``norm``).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> g = GraphBuilder((8, 8, 3))
        >>> conv_bn(g, "input", 4, 3, 2, "conv1", "bn1"), g.shapes["bn1"]
        ('bn1', (4, 4, 4))
    """
    h = g.conv(x, out_ch, kernel, name=conv, stride=stride, padding=kernel // 2, bias=False,
               W_std=HE_STD, role=role)
    return g.batchnorm(h, name=bn) if norm else h


def basic_block(g: GraphBuilder, x: str, planes: int, stride: int, prefix: str,
                shortcut: str, *, norm: bool = True, branch: float = 1.0,
                rezero: bool = False) -> str:
    """He et al. (2016) BasicBlock: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + s(x))``.

    ``s`` is the identity, or a 1x1 projection + BN (``{prefix}.{shortcut}.0/.1``) when the
    stride or the width changes (option B).

    Args:
        g: the builder.
        x: name of the input node.
        planes: output channels.
        stride: stride of ``conv1`` (and of the projection).
        prefix: node-name prefix (e.g. ``"layer1.0"``).
        shortcut: name of the projection module (``"shortcut"`` or torchvision's
            ``"downsample"``).
        norm: BatchNorm after each convolution (``False``: an unnormalized ResNet).
        branch: residual-branch multiplier (``{prefix}.branch_scale`` when ≠ 1, e.g.
            ``1/sqrt(L)``).
        rezero: a ReZero gate ``{prefix}.gate`` (α = 0 at init) on the branch.

    Returns:
        The name of the block's output node.

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> g = GraphBuilder((8, 8, 4))
        >>> out = basic_block(g, "input", 8, 2, "layer1.0", "shortcut")
        >>> out, g.shapes[out]
        ('layer1.0.relu2', (4, 4, 8))
    """
    h = conv_bn(g, x, planes, 3, stride, f"{prefix}.conv1", f"{prefix}.bn1", norm=norm)
    h = g.relu(h, name=f"{prefix}.relu1")
    h = conv_bn(g, h, planes, 3, 1, f"{prefix}.conv2", f"{prefix}.bn2", norm=norm)
    if branch != 1.0:
        h = g.scale(h, branch, name=f"{prefix}.branch_scale")
    if rezero:
        h = g.gate(h, name=f"{prefix}.gate")
    s = _shortcut(g, x, planes, stride, f"{prefix}.{shortcut}", norm)
    h = g.add_([h, s], name=f"{prefix}.add")
    return g.relu(h, name=f"{prefix}.relu2", tap=True)


def bottleneck_block(g: GraphBuilder, x: str, planes: int, stride: int, prefix: str) -> str:
    """torchvision Bottleneck v1.5: 1x1 (``planes``) -> 3x3 stride ``stride`` -> 1x1 (``4 planes``).

    Each convolution is followed by BN; a ``downsample`` projection joins when shapes change.

    Args:
        g: the builder.
        x: name of the input node.
        planes: bottleneck width (the block outputs ``4 planes`` channels).
        stride: stride of the 3x3 convolution.
        prefix: node-name prefix.

    Returns:
        The name of the block's output node.

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> g = GraphBuilder((8, 8, 4))
        >>> g.shapes[bottleneck_block(g, "input", 2, 1, "layer1.0")]
        (8, 8, 8)
    """
    h = conv_bn(g, x, planes, 1, 1, f"{prefix}.conv1", f"{prefix}.bn1")
    h = g.relu(h, name=f"{prefix}.relu1")
    h = conv_bn(g, h, planes, 3, stride, f"{prefix}.conv2", f"{prefix}.bn2")
    h = g.relu(h, name=f"{prefix}.relu2")
    h = conv_bn(g, h, 4 * planes, 1, 1, f"{prefix}.conv3", f"{prefix}.bn3")
    s = _shortcut(g, x, 4 * planes, stride, f"{prefix}.downsample")
    h = g.add_([h, s], name=f"{prefix}.add")
    return g.relu(h, name=f"{prefix}.relu3", tap=True)


def _shortcut(g: GraphBuilder, x: str, out_ch: int, stride: int, prefix: str,
              norm: bool = True) -> str:
    if stride == 1 and g.shapes[x][-1] == out_ch:
        return x
    return conv_bn(g, x, out_ch, 1, stride, f"{prefix}.0", f"{prefix}.1", norm=norm)


def cifar_resnet(
    depth: int = 20,
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (32, 32, 3),
    width: int = 16,
    parameterization: str = "standard",
    norm: str = "batchnorm",
    branch_scale: str | float = "none",
    rezero: bool = False,
) -> Model:
    """CIFAR ResNet of He et al. (2016, Sec. 4.2): ``depth = 6n + 2``.

    ``conv1`` (3x3, ``width``) -> ``bn1`` -> relu -> three stages ``layer{1,2,3}`` of ``n``
    BasicBlocks with widths ``width * (1, 2, 4)`` and strides ``(1, 2, 2)`` -> global average
    pool -> ``linear``. Shortcuts are option B (1x1 conv + BN, ``layer{k}.{j}.shortcut.0/.1``)
    where the shape changes. ``width=16`` gives the paper's net (resnet20: 0.27M parameters).

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, 110, ...).
        num_classes: outputs of the read-out.
        input_shape: ``(H, W, C)``.
        width: channels of the first stage.
        parameterization: one of ``PARAMETERIZATIONS`` (``dynkit.models.builder``).
        norm: ``"batchnorm"`` or ``"none"`` (no normalization anywhere: the unnormalized
            ResNets of Brock et al. 2021).
        branch_scale: ``"none"``, ``"depth"`` (every residual branch times ``1/sqrt(L)``, L
            the number of blocks; Depth-μP) or a number (``resmlp.branch_multiplier``).
        rezero: a ReZero gate (α = 0 at init, Bachlechner et al. 2021) on every branch.

    Returns:
        The ``Model``.

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR);
        Brock, De & Smith 2021, "Characterizing signal propagation to close the performance
        gap in unnormalized ResNets" (ICLR).

    Example:
        >>> model = cifar_resnet(8, 3, input_shape=(8, 8, 3), width=4)
        >>> model.num_params(), model.layer_names()[-1]
        (5095, 'layer3.0.relu2')
    """
    if (depth - 2) % 6 or depth < 8:
        raise InvalidArgumentError(
            f"cifar_resnet: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
    shape = image_shape(input_shape, "cifar_resnet")
    if norm not in ("batchnorm", "none"):
        raise InvalidArgumentError(f"cifar_resnet: norm must be 'batchnorm' or 'none', got "
                                   f"{norm!r}")
    config = {
        "arch": "cifar_resnet", "depth": int(depth), "num_classes": int(num_classes),
        "input_shape": list(shape), "width": int(width), "parameterization": parameterization,
    }
    extra = {"norm": norm, "branch_scale": branch_scale, "rezero": bool(rezero)}
    config.update({k: v for k, v in extra.items()  # defaults left out: configs stay as before
                   if v != {"norm": "batchnorm", "branch_scale": "none", "rezero": False}[k]})
    n = (depth - 2) // 6
    branch = branch_multiplier(branch_scale, 3 * n)
    g = GraphBuilder(shape, parameterization)
    h = conv_bn(g, "input", width, 3, 1, "conv1", "bn1", role="input", norm=norm == "batchnorm")
    h = g.relu(h, name="relu")
    for stage, (mult, stride) in enumerate(zip((1, 2, 4), (1, 2, 2)), start=1):
        for j in range(n):
            h = basic_block(g, h, width * mult, stride if j == 0 else 1, f"layer{stage}.{j}",
                            "shortcut", norm=norm == "batchnorm", branch=branch, rezero=rezero)
    feature = g.global_avgpool(h, name="avgpool")
    out = g.dense(feature, num_classes, name="linear", W_std=1.0, role="readout")
    return g.build(config, out, feature)


def resnet(
    depth: int = 18,
    num_classes: int = 1000,
    *,
    input_shape: Sequence[int] = (224, 224, 3),
    parameterization: str = "standard",
) -> Model:
    """torchvision ImageNet ResNet (He et al. 2016, Table 1), ``depth`` in 18, 34, 50, 101, 152.

    ``conv1`` (7x7 stride 2 padding 3) -> ``bn1`` -> ``relu`` -> ``maxpool`` (3x3 stride 2
    padding 1, padded with -inf) -> ``layer1..4`` (widths 64, 128, 256, 512, strides 1, 2, 2, 2;
    BasicBlocks for 18/34, Bottlenecks v1.5 for 50+) -> ``avgpool`` (global) -> ``fc``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_classes: outputs of ``fc``.
        input_shape: ``(H, W, C)``.
        parameterization: one of ``PARAMETERIZATIONS``.

    Returns:
        The ``Model`` (node names as torchvision's modules).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> model = resnet(18)
        >>> model.num_params(), model.output
        (11689512, 'fc')
    """
    if depth not in IMAGENET_LAYERS:
        raise InvalidArgumentError(
            f"resnet: depth must be one of {sorted(IMAGENET_LAYERS)}, got {depth}")
    shape = image_shape(input_shape, "resnet")
    config = {"arch": "resnet", "depth": int(depth), "num_classes": int(num_classes),
              "input_shape": list(shape), "parameterization": parameterization}
    kind, layers = IMAGENET_LAYERS[depth]
    g = GraphBuilder(shape, parameterization)
    h = conv_bn(g, "input", 64, 7, 2, "conv1", "bn1", role="input")
    h = g.relu(h, name="relu")
    h = g.pool(h, "max", 3, name="maxpool", stride=2, padding=1)
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for j in range(blocks):
            stride = 2 if stage > 1 and j == 0 else 1
            prefix = f"layer{stage}.{j}"
            if kind == "basic":
                h = basic_block(g, h, planes, stride, prefix, "downsample")
            else:
                h = bottleneck_block(g, h, planes, stride, prefix)
    feature = g.global_avgpool(h, name="avgpool")
    out = g.dense(feature, num_classes, name="fc", W_std=1.0, role="readout")
    return g.build(config, out, feature)


def resnet20(num_classes: int = 10, **kwargs) -> Model:
    """CIFAR ResNet-20 (He et al. 2016, Sec. 4.2); ``cifar_resnet(depth=20)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``width``, ``parameterization`` of :func:`cifar_resnet`.

    Returns:
        The ``Model`` (272,474 parameters with 10 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet20().num_params()
        272474
    """
    return cifar_resnet(20, num_classes, **kwargs)


def resnet32(num_classes: int = 10, **kwargs) -> Model:
    """CIFAR ResNet-32 (He et al. 2016, Sec. 4.2); ``cifar_resnet(depth=32)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``width``, ``parameterization`` of :func:`cifar_resnet`.

    Returns:
        The ``Model`` (466,906 parameters with 10 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet32().num_params()
        466906
    """
    return cifar_resnet(32, num_classes, **kwargs)


def resnet44(num_classes: int = 10, **kwargs) -> Model:
    """CIFAR ResNet-44 (He et al. 2016, Sec. 4.2); ``cifar_resnet(depth=44)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``width``, ``parameterization`` of :func:`cifar_resnet`.

    Returns:
        The ``Model`` (661,338 parameters with 10 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet44().num_params()
        661338
    """
    return cifar_resnet(44, num_classes, **kwargs)


def resnet56(num_classes: int = 10, **kwargs) -> Model:
    """CIFAR ResNet-56 (He et al. 2016, Sec. 4.2); ``cifar_resnet(depth=56)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``width``, ``parameterization`` of :func:`cifar_resnet`.

    Returns:
        The ``Model`` (855,770 parameters with 10 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet56().num_params()
        855770
    """
    return cifar_resnet(56, num_classes, **kwargs)


def resnet110(num_classes: int = 10, **kwargs) -> Model:
    """CIFAR ResNet-110 (He et al. 2016, Sec. 4.2); ``cifar_resnet(depth=110)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``width``, ``parameterization`` of :func:`cifar_resnet`.

    Returns:
        The ``Model`` (1,730,714 parameters with 10 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet110().num_params()
        1730714
    """
    return cifar_resnet(110, num_classes, **kwargs)


def resnet18(num_classes: int = 1000, **kwargs) -> Model:
    """torchvision ResNet-18 (He et al. 2016, Table 1); ``resnet(depth=18)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``parameterization`` of :func:`resnet`.

    Returns:
        The ``Model`` (11,689,512 parameters with 1000 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet18().num_params()
        11689512
    """
    return resnet(18, num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> Model:
    """torchvision ResNet-34 (He et al. 2016, Table 1); ``resnet(depth=34)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``parameterization`` of :func:`resnet`.

    Returns:
        The ``Model`` (21,797,672 parameters with 1000 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet34().num_params()
        21797672
    """
    return resnet(34, num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> Model:
    """torchvision ResNet-50 v1.5 (He et al. 2016, Table 1); ``resnet(depth=50)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``parameterization`` of :func:`resnet`.

    Returns:
        The ``Model`` (25,557,032 parameters with 1000 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet50().num_params()
        25557032
    """
    return resnet(50, num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> Model:
    """torchvision ResNet-101 v1.5 (He et al. 2016, Table 1); ``resnet(depth=101)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``parameterization`` of :func:`resnet`.

    Returns:
        The ``Model`` (44,549,160 parameters with 1000 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet101().num_params()
        44549160
    """
    return resnet(101, num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> Model:
    """torchvision ResNet-152 v1.5 (He et al. 2016, Table 1); ``resnet(depth=152)``.

    Args:
        num_classes: outputs of the read-out.
        **kwargs: ``input_shape``, ``parameterization`` of :func:`resnet`.

    Returns:
        The ``Model`` (60,192,808 parameters with 1000 classes).

    References:
        He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition" (CVPR).

    Example:
        >>> resnet152().num_params()
        60192808
    """
    return resnet(152, num_classes, **kwargs)
