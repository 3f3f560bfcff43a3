"""The forward functions of the graph ops (``OPS``): dense and (grouped, dilated) conv layers,
BatchNorm, pooling, and the ops beyond the classic CNN set: concatenation, upsampling,
transposed convolution, layer and group normalization (the layers of DenseNets, U-Nets and
traced PyTorch models).

All tensors are channels-last (``NWC`` / ``NHWC`` / ``NDHWC``), as in ``dynkit.models.graph``.
Each function matches its PyTorch counterpart on the same (transposed) tensors:

===================  ========================================  ==========================================
op                   attrs                                     PyTorch
===================  ========================================  ==========================================
``concat``           (none: the channel axis)                  ``torch.cat(xs, dim=1)``
``upsample``         ``mode`` (``nearest``/``bilinear``),      ``F.interpolate`` (``mode="bilinear"`` is
                     ``scale_factor`` (int) *or* ``size``,     ``"linear"`` on 1-d inputs)
                     ``align_corners`` (bilinear, default
                     False)
``conv_transpose``   ``kernel, in_ch, out_ch, stride,          ``F.conv_transpose2d`` (``groups=1``)
                     padding, output_padding, dilation``,
                     ``bias``, ``w_mult``, ``b_mult``
``layernorm``        ``num_features, eps, affine``             ``nn.LayerNorm(C)`` on the channel axis
``groupnorm``        ``num_groups, num_features, eps, affine`` ``nn.GroupNorm``
===================  ========================================  ==========================================

Parameter layouts: ``conv_transpose`` stores ``w`` of shape ``(*kernel, in_ch, out_ch)`` (like a
conv's HWIO, the input channels first): PyTorch's ``ConvTranspose2d.weight`` of shape
``(in, out, kh, kw)`` is ``w.permute(2, 3, 0, 1)``. ``layernorm``/``groupnorm`` store ``scale``
and ``bias`` of shape ``(num_features,)`` (PyTorch's ``weight``/``bias``) when ``affine``.

The bilinear map is a fixed matrix per spatial axis (``interpolation_matrix``), so analyses
can read its coefficients (all non-negative) as edge weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dynkit.errors import InvalidArgumentError

__all__ = ["ACTIVATIONS", "OPS", "UPSAMPLE_MODES", "act", "apply_upsample", "batchnorm", "concat",
           "conv", "conv_linear", "conv_transpose", "conv_transpose_linear", "dense", "groupnorm",
           "interpolation_matrix", "layernorm", "nearest_index", "norm_param_shapes",
           "normalize_groups", "normalized", "upsample", "upsample_maps", "upsample_sizes"]

UPSAMPLE_MODES = ("nearest", "bilinear")

#: Elementwise activations a node of op ``"act"`` may name (``relu`` has its own op).
ACTIVATIONS = {
    "tanh": jnp.tanh,
    "erf": jax.scipy.special.erf,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "identity": lambda x: x,
    "leaky_relu": jax.nn.leaky_relu,
    "abs": jnp.abs,
}


def _tuple(v, nd) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def concat(ins, attrs=None):
    """Concatenate channels-last tensors along the channel (last) axis.

    Example:
        >>> concat([jnp.zeros((1, 2, 3)), jnp.ones((1, 2, 1))]).shape
        (1, 2, 4)
    """
    return jnp.concatenate(ins, axis=-1)


# --------------------------------------------------------------------- upsampling
def upsample_sizes(in_sizes: Sequence[int], attrs) -> tuple[int, ...]:
    """Output spatial sizes of an ``upsample`` node on inputs of spatial ``in_sizes``:
    ``attrs["size"]`` or ``in * scale_factor`` (exactly one of them must be given).

    Example:
        >>> upsample_sizes((3, 5), {"scale_factor": 2}), upsample_sizes((3, 5), {"size": [4, 4]})
        ((6, 10), (4, 4))
    """
    nd = len(in_sizes)
    size, factor = attrs.get("size"), attrs.get("scale_factor")
    if (size is None) == (factor is None):
        raise InvalidArgumentError("upsample: give exactly one of attrs 'size' and "
                                   f"'scale_factor', got size={size!r}, scale_factor={factor!r}")
    if size is not None:
        out = tuple(int(s) for s in _tuple(size, nd))
    else:
        factors = _tuple(factor, nd)
        if any(int(f) != f or f < 1 for f in factors):
            raise InvalidArgumentError(f"upsample: scale_factor must be a positive integer (or "
                                       f"one per spatial axis), got {factor!r}")
        out = tuple(int(n * f) for n, f in zip(in_sizes, factors))
    if len(out) != nd or min(out) < 1:
        raise InvalidArgumentError(f"upsample: size must give {nd} positive sizes, got {size!r}")
    return out


def _ratio(n_in: int, n_out: int, factor) -> float:
    """PyTorch's source/destination scale: ``1 / scale_factor`` when it is given, else
    ``n_in / n_out`` (``area_pixel_compute_scale``, align_corners=False)."""
    return 1.0 / float(factor) if factor is not None else n_in / n_out


def nearest_index(n_in: int, n_out: int, factor=None) -> np.ndarray:
    """Source index of every output position of a nearest upsampling,
    ``min(floor(dst * n_in / n_out), n_in - 1)`` (PyTorch's ``mode="nearest"``).

    Example:
        >>> nearest_index(2, 5).tolist()
        [0, 0, 0, 1, 1]
    """
    dst = np.arange(n_out)
    src = dst // int(factor) if factor is not None else (dst * n_in) // n_out
    return np.minimum(src, n_in - 1)


def interpolation_matrix(n_in: int, n_out: int, align_corners: bool = False,
                         factor=None) -> np.ndarray:
    """``(n_out, n_in)`` float64 matrix of 1-d linear interpolation (PyTorch's
    ``upsample_linear``/``bilinear`` per axis).

    ``align_corners=False``: ``src = max((dst + 1/2) r - 1/2, 0)`` with ``r = n_in / n_out``
    (``1 / scale_factor`` when ``factor`` is given); ``align_corners=True``:
    ``src = dst (n_in - 1) / (n_out - 1)``. Row ``dst`` has ``1 - λ`` at ``floor(src)`` and
    ``λ = src - floor(src)`` at ``min(floor(src) + 1, n_in - 1)`` (summed when they coincide).

    Example:
        >>> interpolation_matrix(2, 4)
        array([[1.  , 0.  ],
               [0.75, 0.25],
               [0.25, 0.75],
               [0.  , 1.  ]])
    """
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        src = np.maximum((dst + 0.5) * _ratio(n_in, n_out, factor) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(m, (np.arange(n_out), i1), lam)
    return m


def upsample_maps(in_sizes: Sequence[int], attrs) -> list:
    """Per spatial axis: the index array (nearest) or interpolation matrix (bilinear)."""
    mode = attrs.get("mode", "nearest")
    if mode not in UPSAMPLE_MODES:
        raise InvalidArgumentError(f"upsample: mode must be one of {UPSAMPLE_MODES}, "
                                   f"got {mode!r}")
    out = upsample_sizes(in_sizes, attrs)
    factors = (_tuple(attrs["scale_factor"], len(in_sizes)) if attrs.get("scale_factor")
               is not None else (None,) * len(in_sizes))
    if mode == "nearest":
        return [nearest_index(n, m, f) for n, m, f in zip(in_sizes, out, factors)]
    ac = bool(attrs.get("align_corners", False))
    return [interpolation_matrix(n, m, ac, f) for n, m, f in zip(in_sizes, out, factors)]


def apply_upsample(x, maps, mode: str):
    """Apply per-axis ``maps`` (``upsample_maps``) to the spatial axes of channels-last ``x``;
    bilinear maps are contracted as given (path-norms pass the coefficients' powers)."""
    for axis, m in enumerate(maps, start=1):
        if mode == "nearest":
            x = jnp.take(x, jnp.asarray(m), axis=axis)
        else:
            x = jnp.moveaxis(jnp.tensordot(jnp.asarray(m, x.dtype), x, axes=([1], [axis])),
                             0, axis)
    return x


def upsample(ins, attrs):
    """Nearest or (bi)linear upsampling of a channels-last tensor (``F.interpolate``)."""
    x = ins[0]
    return apply_upsample(x, upsample_maps(x.shape[1:-1], attrs), attrs.get("mode", "nearest"))


# --------------------------------------------------------------------- transposed convolution
def conv_transpose_linear(attrs):
    """The linear map ``(x, w) -> conv_transpose(x, w)`` of a ``conv_transpose`` node (no
    multiplier, no bias), ``w`` of shape ``(*kernel, in_ch, out_ch)``.

    Output size per axis: ``(n - 1) s - 2 p + d (k - 1) + output_padding + 1``. It is the
    convolution of the input dilated by the stride (``lhs_dilation``) with the spatially
    flipped kernel, kernel dilation ``d`` and padding ``d (k - 1) - p`` before and
    ``d (k - 1) - p + output_padding`` after, as in ``torch.nn.functional.conv_transpose2d``.

    Example:
        >>> f = conv_transpose_linear({"kernel": [3, 3], "stride": 2, "padding": 1,
        ...                            "output_padding": 1})
        >>> f(jnp.ones((1, 4, 5, 2)), jnp.ones((3, 3, 2, 6))).shape
        (1, 8, 10, 6)
    """
    kernel = tuple(attrs["kernel"])
    nd = len(kernel)
    if int(attrs.get("groups", 1)) != 1:
        raise InvalidArgumentError(f"conv_transpose: groups={attrs['groups']} is not supported "
                                   "(groups=1 only)")
    pad = attrs.get("padding", 0)
    if isinstance(pad, str):
        raise InvalidArgumentError(f"conv_transpose: padding must be an int or one int per "
                                   f"axis (as in PyTorch), got {pad!r}")
    pad, stride = _tuple(pad, nd), _tuple(attrs.get("stride", 1), nd)
    out_pad, dil = _tuple(attrs.get("output_padding", 0), nd), _tuple(attrs.get("dilation", 1), nd)
    if any(o >= max(s, d) for o, s, d in zip(out_pad, stride, dil)):
        raise InvalidArgumentError(f"conv_transpose: output_padding {out_pad} must be smaller "
                                   f"than the stride {stride} or the dilation {dil}")
    padding = [(d * (k - 1) - p, d * (k - 1) - p + o)
               for k, p, o, d in zip(kernel, pad, out_pad, dil)]
    spatial = "HW"[:nd] if nd <= 2 else "DHW"
    dn = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    flip = tuple(range(nd))

    def linear(x, w):
        return jax.lax.conv_general_dilated(x, jnp.flip(w, flip), (1,) * nd, padding,
                                            lhs_dilation=stride, rhs_dilation=dil,
                                            dimension_numbers=dn)
    return linear


def conv_transpose(p, x, a):
    """``w_mult * conv_transpose(x, w) + b_mult * b`` (``conv_transpose_linear``)."""
    dtype = jnp.result_type(x, p["w"])
    y = a.get("w_mult", 1.0) * conv_transpose_linear(a)(x.astype(dtype), p["w"].astype(dtype))
    if "b" in p:
        y = y + a.get("b_mult", 1.0) * p["b"]
    return y


# --------------------------------------------------------------------- normalization
def normalize_groups(x, num_groups: int, eps: float):
    """``(x - mean) / sqrt(var + eps)`` per example over the spatial axes and each of
    ``num_groups`` consecutive channel groups (biased variance); ``num_groups = 1`` over all
    channels and positions. Layer norm over the channel axis only is
    ``normalize_groups`` of each position: see ``layernorm``."""
    c = x.shape[-1]
    if c % num_groups:
        raise InvalidArgumentError(f"groupnorm: {c} channels do not split into "
                                   f"num_groups={num_groups} groups")
    g = x.reshape(*x.shape[:-1], num_groups, c // num_groups)
    axes = (*range(1, x.ndim - 1), x.ndim)
    mean = jnp.mean(g, axes, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axes, keepdims=True)
    return ((g - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)


def normalized(op: str, x, a):
    """The normalized input ``x̂`` of a ``layernorm`` (over the channel axis at each
    position) or ``groupnorm`` node, before its affine ``scale * x̂ + bias``."""
    eps = a.get("eps", 1e-5)
    if op == "layernorm":
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + eps)
    return normalize_groups(x, int(a["num_groups"]), eps)


def _affine_norm(op):
    def fn(p, x, a):
        y = normalized(op, x, a)
        if "scale" in p:
            y = y * p["scale"]
        if "bias" in p:
            y = y + p["bias"]
        return y
    fn.__name__ = op
    fn.__doc__ = f"``{op}``: ``scale * x̂ + bias`` with ``x̂ = normalized({op!r}, x, attrs)``."
    return fn


layernorm = _affine_norm("layernorm")
groupnorm = _affine_norm("groupnorm")


def norm_param_shapes(attrs) -> dict[str, tuple[int, ...]]:
    """``{"scale": (C,), "bias": (C,)}`` of an affine layer/group norm, ``{}`` otherwise."""
    if not attrs.get("affine", True):
        return {}
    c = int(attrs["num_features"])
    return {"scale": (c,), "bias": (c,)}


def act(ins, a):
    """An elementwise activation ``attrs["fn"]``; ``leaky_relu`` reads ``negative_slope``
    (default 0.01, PyTorch's), ``gelu`` reads ``approximate`` (``"none"``, the default, is
    the exact erf form; ``"tanh"`` the tanh approximation)."""
    x, fn = ins[0], a["fn"]
    if fn == "leaky_relu":
        return jax.nn.leaky_relu(x, a.get("negative_slope", 0.01))
    if fn == "gelu" and a.get("approximate", "none") == "tanh":
        return jax.nn.gelu(x, approximate=True)
    if fn not in ACTIVATIONS:
        raise InvalidArgumentError(f"act: unknown activation {fn!r}; known: "
                                   f"{', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[fn](x)





def dense(p, x, a):
    """``w_mult * (x @ w) + b_mult * b`` of a dense node."""
    y = a["w_mult"] * (x @ p["w"])
    if "b" in p:
        y = y + a.get("b_mult", 1.0) * p["b"]
    return y


def conv_linear(attrs) -> Callable:
    """The linear map ``(x, w) -> conv(x, w)`` of a conv node, without multiplier or bias.

    Channels-last (NWC/NHWC/NDHWC, kernels WIO/HWIO/DHWIO), with the node's stride, padding
    (``"SAME"``, ``"VALID"``, an int or one int per axis, as in PyTorch), ``dilation`` and
    ``groups`` (kernel ``(*kernel, in / groups, out)``, PyTorch's grouping).

    Args:
        attrs: the conv node's attributes (``kernel``, ``stride``, ``padding``, ``dilation``,
            ``groups``).

    Returns:
        A function ``(x, w) -> y``.

    Example:
        >>> f = conv_linear({"kernel": [3], "stride": 1, "padding": 1})
        >>> f(jnp.ones((1, 5, 1)), jnp.ones((3, 1, 1)))[0, :, 0].tolist()
        [2.0, 3.0, 3.0, 3.0, 2.0]
    """
    nd = len(attrs["kernel"])
    spatial = "HW"[:nd] if nd <= 2 else "DHW"
    dn = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    pad = attrs.get("padding", "SAME")
    if not isinstance(pad, str):
        pad = [(p, p) for p in _tuple(pad, nd)]
    strides = _tuple(attrs.get("stride", 1), nd)
    dilation = _tuple(attrs.get("dilation", 1), nd)
    groups = int(attrs.get("groups", 1))
    return lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, pad, rhs_dilation=dilation, dimension_numbers=dn,
        feature_group_count=groups)


def conv(p, x, a):
    """``w_mult * conv(x, w) + b_mult * b`` of a conv node (``conv_linear``)."""
    dtype = jnp.result_type(x, p["w"])  # promote like ``x @ w`` does for dense layers
    y = a["w_mult"] * conv_linear(a)(x.astype(dtype), p["w"].astype(dtype))
    if "b" in p:
        y = y + a.get("b_mult", 1.0) * p["b"]
    return y


def batchnorm(p, x, a, train):
    """BatchNorm of a channels-last ``x``: ``(y, moments)``, with the batch moments
    ``(mean, var, count)`` in train mode (else the running statistics are used and
    ``moments`` is None)."""
    eps = a.get("eps", 1e-5)
    axes = tuple(range(x.ndim - 1))
    if train:
        mean = jnp.mean(x, axes)
        var = jnp.var(x, axes)
        count = int(np.prod([x.shape[i] for i in axes]))
        moments = (mean, var, count)
    else:
        mean, var, moments = p["mean"], p["var"], None
    y = (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]
    return y, moments


def _pool(ins, a, kind):
    x = ins[0]
    nd = x.ndim - 2
    win = (1, *_tuple(a["window"], nd), 1)
    strides = (1, *_tuple(a.get("stride", a["window"]), nd), 1)
    pad = a.get("padding", "VALID")
    if isinstance(pad, int):
        pad = [(0, 0)] + [(pad, pad)] * nd + [(0, 0)]
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, win, strides, pad)
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, win, strides, pad)
    if a.get("count_include_pad", True) or pad == "VALID":
        return summed / math.prod(win)
    ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, win, strides, pad)
    return summed / counts


#: The forward function of every op but ``input`` and ``batchnorm``: ``(p, x, attrs)`` for the
#: parameter-carrying ops of ``graph.PARAM_OPS``, ``(inputs, attrs)`` for the others.
OPS: dict[str, Callable] = {
    "dense": dense,
    "conv": conv,
    "conv_transpose": conv_transpose,
    "layernorm": layernorm,
    "groupnorm": groupnorm,
    "relu": lambda ins, a: jax.nn.relu(ins[0]),
    "act": act,
    "maxpool": lambda ins, a: _pool(ins, a, "max"),
    "avgpool": lambda ins, a: _pool(ins, a, "avg"),
    "global_avgpool": lambda ins, a: jnp.mean(ins[0], axis=tuple(range(1, ins[0].ndim - 1))),
    "flatten": lambda ins, a: ins[0].reshape(ins[0].shape[0], -1),
    "add": lambda ins, a: sum(ins[1:], ins[0]),
    "scale": lambda ins, a: a["factor"] * ins[0],
    "gate": lambda p, x, a: p["alpha"] * x,
    "concat": concat,
    "upsample": upsample,
}
