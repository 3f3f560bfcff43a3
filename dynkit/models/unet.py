"""U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation"): an encoder-decoder with long skips by channel concatenation, optionally scaled
as in ScaleLong (Huang et al. 2023).

Node names: ``enc{i}.conv1/relu1/conv2/relu2`` and ``enc{i}.pool`` (i = 1..depth),
``bottleneck.conv1/relu1/conv2/relu2``, then per decoder level ``i = depth..1``:
``dec{i}.up`` (a ``conv_transpose``, or an ``upsample`` followed by the 3x3 conv
``dec{i}.upconv``), ``dec{i}.skip_scale`` (only with a long-skip scale ≠ 1), ``dec{i}.cat``
(``concat([up, skip])``: the decoder's channels first), ``dec{i}.conv1/relu1/conv2/relu2``, and
the 1x1 read-out ``head``. Images are channels-last; 3x3 convolutions with padding 1 keep the
spatial size, so ``H`` and ``W`` must be divisible by ``2^depth``.

The feature node (for neural collapse and other feature analyses) is the bottleneck output
``bottleneck.relu2``: the only place where every pixel of the input has been mixed into one
low-resolution representation that the long skips do not bypass. ``model.features`` flattens
it, so the neural-collapse variability and geometry of the features (NC1, NC2) can be measured
against any labels (e.g. the digit labels of the ``denoise`` data, ``meta["labels_train"]``);
the analyses that need a dense classifier read-out of the features (NC3, NC4) raise
``UnsupportedLayerError``, as the output is the 1x1 conv ``head``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.models.builder import GraphBuilder
from dynkit.models.cnn import image_shape
from dynkit.models.graph import Model

__all__ = ["SKIP_SCALE_MODES", "UPSAMPLERS", "unet"]

UPSAMPLERS = ("transpose", "nearest", "bilinear")
SKIP_SCALE_MODES = ("constant", "power")
_HE = math.sqrt(2.0)


def _block(g: GraphBuilder, x: str, width: int, p: str, tap: bool = False) -> str:
    h = g.conv(x, width, 3, name=f"{p}.conv1", padding=1, W_std=_HE,
               role="input" if x == "input" else "hidden")
    h = g.relu(h, name=f"{p}.relu1")
    h = g.conv(h, width, 3, name=f"{p}.conv2", padding=1, W_std=_HE)
    return g.relu(h, name=f"{p}.relu2", tap=tap)


def unet(
    depth: int = 2,
    base_width: int = 16,
    out_channels: int = 1,
    *,
    input_shape: Sequence[int] = (8, 8, 1),
    upsampling: str = "transpose",
    skip_scale: float = 1.0,
    skip_scale_mode: str = "constant",
    parameterization: str = "standard",
) -> Model:
    """A U-Net of ``depth`` down/up-sampling levels.

    Encoder level ``i`` (width ``base_width · 2^(i-1)``): two 3x3 conv-ReLU, then a 2x2 max
    pool; the bottleneck has width ``base_width · 2^depth``. Decoder level ``i``: upsample by 2
    to width ``w_i = base_width · 2^(i-1)`` (``transpose``: a 2x2/2 ``ConvTranspose``;
    ``nearest``/``bilinear``: resize then a 3x3 conv, the "resize-convolution"), concatenate
    the long skip ``s_i`` (encoder level ``i``'s output, before pooling) scaled by ``κ_i``,
    two 3x3 conv-ReLU; a 1x1 conv ``head`` gives ``out_channels``.

    Long-skip scaling (ScaleLong, Huang et al. 2023): ``skip_scale_mode="constant"`` uses
    ``κ_i = κ`` at every level (ScaleLong's "CS" with one constant; ``κ = 1/√2`` is the
    1/√2-CS of Imagen/SR3/score SDEs); ``"power"`` uses ``κ_i = κ^(i-1)``, counting the levels
    from the outermost (full-resolution) skip ``i = 1``, so deeper skips are damped more
    (ScaleLong's ``κ^(i-1)`` scaling of the i-th long skip). ``κ = 1`` is the plain U-Net
    (no scale node).

    Args:
        depth: number of pooling levels, ``>= 1``.
        base_width: channels of the first level.
        out_channels: channels of the output image.
        input_shape: ``(H, W, C)``, ``H`` and ``W`` divisible by ``2^depth``.
        upsampling: one of ``UPSAMPLERS``.
        skip_scale: ``κ > 0``.
        skip_scale_mode: one of ``SKIP_SCALE_MODES``.
        parameterization: one of ``PARAMETERIZATIONS``.

    Returns:
        The ``Model`` (output ``(H, W, out_channels)``, feature node ``bottleneck.relu2``).

    Raises:
        InvalidArgumentError: a bad depth, width, upsampling, scale or mode.
        ShapeMismatchError: an input size not divisible by ``2^depth``.

    References:
        Ronneberger, Fischer & Brox 2015, "U-Net: convolutional networks for biomedical image
        segmentation" (MICCAI); Huang et al. 2023, "ScaleLong: towards more stable training of
        diffusion model via scaling network long skip connection" (NeurIPS).

    Example:
        >>> m = unet(2, 4, input_shape=(8, 8, 1), skip_scale=0.5, skip_scale_mode="power")
        >>> m.feature, m.output
        ('bottleneck.relu2', 'head')
        >>> [(n.name, n.attrs["factor"]) for n in m.nodes if n.op == "scale"]
        [('dec2.skip_scale', 0.5)]
    """
    if int(depth) < 1 or int(base_width) < 1 or int(out_channels) < 1:
        raise InvalidArgumentError(f"unet: depth, base_width and out_channels must be >= 1, got "
                                   f"{depth}, {base_width}, {out_channels}")
    if upsampling not in UPSAMPLERS:
        raise InvalidArgumentError(f"unet: upsampling must be one of {UPSAMPLERS}, got "
                                   f"{upsampling!r}")
    if skip_scale_mode not in SKIP_SCALE_MODES:
        raise InvalidArgumentError(f"unet: skip_scale_mode must be one of {SKIP_SCALE_MODES}, "
                                   f"got {skip_scale_mode!r}")
    if not float(skip_scale) > 0:
        raise InvalidArgumentError(f"unet: skip_scale must be > 0, got {skip_scale}")
    shape = image_shape(input_shape, "unet")
    if shape[0] % 2 ** depth or shape[1] % 2 ** depth:
        raise ShapeMismatchError(f"unet: input height and width must be divisible by "
                                 f"2^depth = {2 ** depth}, got input_shape {shape}")
    config = {"arch": "unet", "depth": int(depth), "base_width": int(base_width),
              "out_channels": int(out_channels), "input_shape": list(shape),
              "upsampling": upsampling, "skip_scale": float(skip_scale),
              "skip_scale_mode": skip_scale_mode, "parameterization": parameterization}
    g = GraphBuilder(shape, parameterization)
    h, skips = "input", []
    for i in range(1, depth + 1):
        s = _block(g, h, base_width * 2 ** (i - 1), f"enc{i}", tap=True)
        skips.append(s)
        h = g.pool(s, "max", 2, name=f"enc{i}.pool")
    feature = h = _block(g, h, base_width * 2 ** depth, "bottleneck", tap=True)
    for i in range(depth, 0, -1):
        width = base_width * 2 ** (i - 1)
        if upsampling == "transpose":
            up = g.conv_transpose(h, width, 2, name=f"dec{i}.up", stride=2, W_std=_HE)
        else:
            up = g.upsample(h, 2, upsampling, name=f"dec{i}.up")
            up = g.conv(up, width, 3, name=f"dec{i}.upconv", padding=1, W_std=_HE)
        kappa = skip_scale if skip_scale_mode == "constant" else skip_scale ** (i - 1)
        s = skips[i - 1]
        if kappa != 1.0:
            s = g.scale(s, kappa, name=f"dec{i}.skip_scale")
        h = g.concat([up, s], name=f"dec{i}.cat")
        h = _block(g, h, width, f"dec{i}", tap=True)
    out = g.conv(h, out_channels, 1, name="head", padding=0, role="readout")
    return g.build(config, out, feature)
