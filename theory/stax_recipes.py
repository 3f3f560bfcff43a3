"""Infinite-width kernels of the seed architectures as ``stax`` networks: DenseNet (channel
concatenation), U-Net (skip concatenation across resolutions) and a residual net with
``1/sqrt(L)`` branches. Each recipe returns an ``(init_fn, apply_fn, kernel_fn)`` triple whose
finite network is the architecture at the given widths and whose kernel is its limit with all
widths -> ∞ in the given proportions (concatenations are exact through
:mod:`dynkit.theory.stax_blocks`).

References:
    Huang et al. 2017, "Densely connected convolutional networks"; Ronneberger et al. 2015,
    "U-Net"; He et al. 2016 (residual networks); Hayou et al. 2021, "Stable ResNet" (``1/sqrt(L)``
    branch scaling); Novak et al. 2020 (``stax``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from dynkit.errors import InvalidArgumentError
from dynkit.theory import stax
from dynkit.theory.stax_kernel import Layer, check_single_input, map_optional
from dynkit.theory.stax_triple import triple

__all__ = ["NearestUpsample", "stax_densenet", "stax_resnet", "stax_unet"]


def _positive(name, value):
    if int(value) != value or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _linear(width, filter_shape, W_std, b_std):
    if filter_shape is None:
        return stax.Dense(width, W_std=W_std, b_std=b_std)
    return stax.Conv(width, filter_shape, padding="SAME", W_std=W_std, b_std=b_std)


def stax_densenet(depth, growth, stem=None, filter_shape=(3, 3), W_std=1.0, b_std=0.0,
                  activation=None, out_dim=1, readout=True):
    """A DenseNet block (Huang et al. 2017) as a ``stax`` network, with its exact kernel.

    ``x_0 = stem(x)``; layer ``l`` computes ``h_l = Conv_growth(φ(x_{l-1}))`` and
    ``x_l = [x_{l-1} ‖ h_l]`` (channel concatenation). The readout is
    ``Dense(out_dim)(GlobalAvgPool(φ(x_L)))`` (``Dense`` alone for ``filter_shape=None``).
    Kernel: the block-structured recursion of :mod:`dynkit.theory.stax_blocks` (each block
    of ``x_L`` keeps its own covariance; ``φ`` acts per block; a ``Conv`` mixes the blocks
    with weights ``C_i / C``). The limit: ``stem, growth -> ∞`` with ``growth / stem`` fixed.

    Args:
        depth: number of dense layers ``L``.
        growth: channels added per layer.
        stem: channels of the stem ``Conv``/``Dense`` (default ``2 * growth``).
        filter_shape: the conv window (``"SAME"`` padding), or None for a fully connected
            DenseNet (``Dense`` layers, inputs ``(N, features)``).
        W_std, b_std: weight/bias scales of every layer (NTK parameterization).
        activation: a ``stax`` activation triple (default ``stax.Relu()``).
        out_dim: readout outputs; readout: False ends at ``x_L`` (no activation/readout).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Huang et al. 2017, "Densely connected convolutional networks".

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        >>> _, _, kernel_fn = stax_densenet(3, 8, filter_shape=None, W_std=1.5)
        >>> round(float(kernel_fn(x, None, "nngp")[0, 1]), 4)
        1.0059
    """
    depth, growth = _positive("depth", depth), _positive("growth", growth)
    stem = 2 * growth if stem is None else _positive("stem", stem)
    act = stax.Relu() if activation is None else activation
    layers = [_linear(stem, filter_shape, W_std, b_std)]
    for _ in range(depth):
        branch = stax.serial(act, _linear(growth, filter_shape, W_std, b_std))
        layers.append(stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch),
                                  stax.FanInConcat()))
    if readout:
        pool = [] if filter_shape is None else [stax.GlobalAvgPool()]
        layers += [act, *pool, stax.Dense(out_dim, W_std=W_std, b_std=b_std)]
    return stax.serial(*layers)


def stax_resnet(depth, width, filter_shape=None, W_std=1.0, b_std=0.0, activation=None,
                branch_scale="sqrt_depth", out_dim=1, readout=True):
    """A residual net ``x_l = x_{l-1} + α Dense(φ(x_{l-1}))`` with branch multiplier ``α``.

    ``α = 1/sqrt(L)`` (``branch_scale="sqrt_depth"``, the depth-stable scaling of Hayou et
    al. 2021), ``1`` (``"none"``) or a number. In NTK parameterization ``α`` times the
    branch's ``Dense(W_std, b_std)`` is exactly ``Dense(α W_std, α b_std)``, so the kernel
    recursion is ``K_l = K_{l-1} + α² (W_std² E φ(u)φ(v) + b_std²)`` (branches are
    independent Gaussian processes, :func:`dynkit.theory.stax.FanInSum`). The stem is
    ``Dense(width)`` (or ``Conv``), the readout ``Dense(out_dim)`` after ``φ``.

    Args:
        depth: number of residual blocks ``L``; width: channels.
        filter_shape: conv window (``"SAME"``) or None for fully connected.
        W_std, b_std: scales of every layer; activation: default ``stax.Relu()``.
        branch_scale: ``"sqrt_depth"`` (default), ``"none"`` or a positive number.
        out_dim: readout outputs; readout: False ends at ``x_L``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        He et al. 2016; Hayou et al. 2021, "Stable ResNet"; Yang & Schoenholz 2017, "Mean
        field residual networks".

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        >>> _, _, kernel_fn = stax_resnet(4, 8, readout=False, W_std=2 ** 0.5)
        >>> round(float(kernel_fn(x, None, "nngp")[0, 0]), 6)    # q_L = q_0 (1 + 1/L)^L, q_0 = 1
        2.441406
    """
    depth, width = _positive("depth", depth), _positive("width", width)
    if branch_scale == "sqrt_depth":
        alpha = 1.0 / math.sqrt(depth)
    elif branch_scale == "none":
        alpha = 1.0
    elif isinstance(branch_scale, (int, float)) and branch_scale > 0:
        alpha = float(branch_scale)
    else:
        raise InvalidArgumentError(f"branch_scale must be 'sqrt_depth', 'none' or a positive "
                                   f"number, got {branch_scale!r}")
    act = stax.Relu() if activation is None else activation
    layers = [_linear(width, filter_shape, W_std, b_std)]
    for _ in range(depth):
        branch = stax.serial(act, _linear(width, filter_shape, alpha * W_std, alpha * b_std))
        layers.append(stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch),
                                  stax.FanInSum()))
    if readout:
        pool = [] if filter_shape is None else [stax.GlobalAvgPool()]
        layers += [act, *pool, stax.Dense(out_dim, W_std=W_std, b_std=b_std)]
    return stax.serial(*layers)


class NearestUpsample(Layer):
    """Nearest-neighbour upsampling by an integer ``factor`` per spatial dim:
    ``y[s] = x[s // f]``. Kernel: ``K'[s, s'] = K[s // f, s' // f]`` (same for ``Θ``); the
    diagonal maps to the diagonal. Acts per channel (``per_block``).

    Args:
        factor: an int or one int per spatial dim.

    References:
        Ronneberger et al. 2015 (U-Net upsampling path); Novak et al. 2020
        (``stax.ImageResize``, method ``"nearest"``).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = NearestUpsample(2).kernel(input_kernel(jnp.array([[[1.0], [2.0]]]), None,
        ...                                            False, False))
        >>> k.nngp.tolist(), k.shape1
        ([[[1.0, 1.0, 4.0, 4.0]]], (4, 1))
    """

    name = "NearestUpsample"
    per_block = True

    def __init__(self, factor):
        self.factor = factor

    def _factors(self, spatial):
        f = self.factor
        fs = tuple(f) if isinstance(f, (list, tuple)) else (f,) * len(spatial)
        if len(fs) != len(spatial) or any(int(v) != v or v < 1 for v in fs):
            raise self.shape_error(f"factor must be a positive integer per spatial dim "
                                   f"({len(spatial)}), got {f!r}")
        return tuple(int(v) for v in fs)

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        if len(in_shape) < 2:
            raise self.shape_error(f"needs spatial inputs, got per-sample shape "
                                   f"{tuple(in_shape)}")
        fs = self._factors(in_shape[:-1])
        return tuple(n * f for n, f in zip(in_shape[:-1], fs)) + (in_shape[-1],)

    def apply(self, params, x, **kwargs):
        for i, f in enumerate(self._factors(x.shape[1:-1])):
            x = jnp.repeat(x, f, axis=1 + i)
        return x

    def kernel(self, k):
        fs = self._factors(k.spatial)

        def up(t, nb):
            for i, f in enumerate(fs * (2 if k.full else 1)):
                t = jnp.repeat(t, f, axis=nb + i)
            return t

        out = tuple(n * f for n, f in zip(k.spatial, fs))
        return k.replace(nngp=up(k.nngp, 2), ntk=map_optional(lambda t: up(t, 2), k.ntk),
                         cov=map_optional(lambda c: up(c, 1), k.cov),
                         shape1=out + (k.shape1[-1],))


def stax_unet(levels, channels, filter_shape=(3, 3), W_std=1.0, b_std=0.0, activation=None,
              out_chan=1, channel_growth=2):
    """A U-Net (Ronneberger et al. 2015) as a ``stax`` network, with its exact kernel.

    ``level(0) = φ ∘ Conv_c``; ``level(j) = φ ∘ Conv_c ∘ [skip ‖ up(level(j-1)(pool(skip)))]``
    with ``skip = φ(Conv_c(x))``, ``pool`` a 2x average pool, ``up`` 2x nearest upsampling
    and ``c`` growing by ``channel_growth`` per level down. The output is a ``1x1`` conv to
    ``out_chan`` channels (a spatial kernel ``(N1, N2, H, H', W, W')``). Kernel: the
    concatenation ``[skip ‖ up]`` is carried as blocks (:mod:`dynkit.theory.stax_blocks`) and
    merged by the decoder's ``Conv``. The limit: all channels -> ∞ in the given proportions.

    Args:
        levels: number of resolutions (spatial sizes must be divisible by ``2**(levels-1)``).
        channels: channels at the top level.
        filter_shape: conv window (``"SAME"``), its length the number of spatial dims.
        W_std, b_std: scales of every conv; activation: default ``stax.Relu()``.
        out_chan: output channels; channel_growth: channel factor per level down.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``.

    References:
        Ronneberger et al. 2015, "U-Net"; Novak et al. 2019 (CNN-GP).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.sin(jnp.arange(16.0)).reshape(2, 8, 1)          # two 1-D signals
        >>> _, _, kernel_fn = stax_unet(2, 4, filter_shape=(3,), W_std=1.5)
        >>> kernel_fn(x, None, "nngp").shape
        (2, 2, 8, 8)
    """
    levels, channels = _positive("levels", levels), _positive("channels", channels)
    act = stax.Relu() if activation is None else activation
    d = len(filter_shape)

    def conv(c):
        return stax.Conv(c, filter_shape, padding="SAME", W_std=W_std, b_std=b_std)

    def level(j, c):
        if j == 0:
            return stax.serial(conv(c), act)
        down = stax.serial(stax.AvgPool((2,) * d, strides=(2,) * d),
                           level(j - 1, c * channel_growth), triple(NearestUpsample(2)))
        return stax.serial(conv(c), act, stax.FanOut(2), stax.parallel(stax.Identity(), down),
                           stax.FanInConcat(), conv(c), act)

    return stax.serial(level(levels - 1, channels),
                       stax.Conv(out_chan, (1,) * d, W_std=W_std, b_std=b_std))
