"""Combinators of the ``stax`` vocabulary: ``Serial`` composition, ``Parallel`` branches,
``FanOut`` and the merges ``FanInSum`` / ``FanInConcat`` (residual and multi-branch networks),
and ``kernel_of``, which runs a layer on kernels with the downstream spatial requirement."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dynkit.errors import UnsupportedLayerError
from dynkit.theory.stax_blocks import (
    BlockKernel,
    block_kernel,
    coerce_kernels,
    concat_kernels,
    sum_kernels,
)
from dynkit.theory.stax_kernel import Layer, check_single_input

__all__ = [
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Parallel",
    "Serial",
    "kernel_of",
    "split_first",
]


class Serial(Layer):
    """Composition ``layers[-1] o ... o layers[0]``.

    Kernel: the layers' kernel maps in turn, each given the spatial covariances (diagonal or
    full) that the layers after it need (:meth:`requirements`).

    Args:
        layers: the :class:`~dynkit.theory.stax_kernel.Layer` objects, first applied first.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.serial``).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_dense import Dense
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0]]), None, False, True)
        >>> kernel_of(Serial([Dense(3, W_std=2.0), Dense(1, b_std=1.0)]), k, False).nngp.tolist()
        [[5.0]]
    """

    name = "serial"

    def __init__(self, layers):
        self.layers = list(layers)

    def out_shape(self, in_shape):
        for layer in self.layers:
            in_shape = layer.out_shape(in_shape)
        return in_shape

    def init(self, key, in_shape):
        params = []
        for layer, k in zip(self.layers, jax.random.split(key, max(len(self.layers), 1))):
            params.append(layer.init(k, in_shape))
            in_shape = layer.out_shape(in_shape)
        return tuple(params)

    def apply(self, params, x, **kwargs):
        for layer, p in zip(self.layers, params):
            x = layer.apply(p, x, **kwargs)
        return x

    def requirements(self, out_full):
        """Per-layer input requirement (full spatial covariance needed?), back to front."""
        reqs = []
        for layer in reversed(self.layers):
            out_full = layer.needs_full(out_full)
            reqs.append(out_full)
        return reqs[::-1]

    def needs_full(self, out_full):
        return self.requirements(out_full)[0] if self.layers else out_full

    def kernel_with(self, k, out_full):
        reqs = self.requirements(out_full)
        outs = reqs[1:] + [out_full]
        for layer, req, out in zip(self.layers, reqs, outs):
            k = kernel_of(layer, coerce_kernels(k, req), out)
        return k


def split_first(layer: Layer):
    """``layer`` as ``(first, rest)``: its first primitive layer (nested ``Serial``s opened)
    and the layers after it (a ``Serial``, or None when nothing follows).

    Args:
        layer: any :class:`~dynkit.theory.stax_kernel.Layer`.

    Returns:
        ``(first, rest)``.

    Example:
        >>> from dynkit.theory.stax_kernel import Layer
        >>> a, b = Layer(), Layer()
        >>> first, rest = split_first(Serial([a, b]))
        >>> first is a, rest.layers == [b]
        (True, True)
    """
    if not isinstance(layer, Serial) or not layer.layers:
        return layer, None
    first, rest = split_first(layer.layers[0])
    tail = ([] if rest is None else [rest]) + layer.layers[1:]
    return first, (Serial(tail) if tail else None)


def kernel_of(layer: Layer, k, out_full: bool):
    """Run ``layer`` on kernel(s) ``k``; nested serials get the downstream requirement.

    Args:
        layer: a :class:`~dynkit.theory.stax_kernel.Layer`.
        k: its input :class:`~dynkit.theory.stax_kernel.Kernel` (a list for several inputs).
        out_full: whether the layers downstream need the full spatial covariance.

    Returns:
        The output kernel(s).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0]]), None, False, False)
        >>> [o.nngp.tolist() for o in kernel_of(Serial([FanOut(2)]), k, False)]
        [[[1.0]], [[1.0]]]
    """
    if isinstance(layer, Serial):
        return layer.kernel_with(k, out_full)
    if isinstance(layer, Parallel):
        return [kernel_of(sub, ki, out_full) for sub, ki in zip(layer.layers, k)]
    if isinstance(k, BlockKernel) and not isinstance(layer, FanOut):  # see stax_blocks
        return block_kernel(layer, k)
    return layer.kernel(k)


class Parallel(Layer):
    """Apply ``layers[i]`` to the i-th of a list of inputs.

    Kernel: ``[layers[i].kernel(K_i)]``; needs the full covariance if any branch does.

    Args:
        layers: one :class:`~dynkit.theory.stax_kernel.Layer` per input.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.parallel``).

    Example:
        >>> Parallel([FanInSum(), FanInSum()]).out_shape([[(2,), (2,)], [(3,), (3,)]])
        [(2,), (3,)]
    """

    name = "parallel"

    def __init__(self, layers):
        self.layers = list(layers)

    def out_shape(self, in_shape):
        if not isinstance(in_shape, list) or len(in_shape) != len(self.layers):
            got = len(in_shape) if isinstance(in_shape, list) else "a single input"
            raise self.shape_error(f"expects a list of {len(self.layers)} inputs (use FanOut), "
                                   f"got {got}")
        return [layer.out_shape(s) for layer, s in zip(self.layers, in_shape)]

    def init(self, key, in_shape):
        keys = jax.random.split(key, max(len(self.layers), 1))
        return tuple(layer.init(k, s) for layer, k, s in zip(self.layers, keys, in_shape))

    def apply(self, params, x, **kwargs):
        return [layer.apply(p, xi, **kwargs) for layer, p, xi in zip(self.layers, params, x)]

    def needs_full(self, out_full):
        return any(layer.needs_full(out_full) for layer in self.layers)


class FanOut(Layer):
    """Replicate the input ``num`` times (a list of identical inputs).

    Kernel: ``[K] * num``.

    Args:
        num: the number of copies.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.FanOut``).

    Example:
        >>> FanOut(2).out_shape((4,))
        [(4,), (4,)]
    """

    name = "FanOut"

    def __init__(self, num):
        self.num = int(num)

    def out_shape(self, in_shape):
        check_single_input(self, in_shape)
        return [in_shape] * self.num

    def apply(self, params, x, **kwargs):
        return [x] * self.num

    def kernel(self, k):
        return [k] * self.num


def _check_list(layer, in_shape):
    if not isinstance(in_shape, list):
        raise layer.shape_error("expects a list of inputs (after FanOut/parallel), got a "
                                "single input")


class FanInSum(Layer):
    """Sum a list of inputs. Kernel: the sum of the kernels (branches are independent
    Gaussian processes at infinite width, e.g. a residual block ending in Dense/Conv).

    ``K' = sum_i K_i``, ``Θ' = sum_i Θ_i``; diagonal form unless every input is full.
    Block-structured inputs are summed per common channel interval
    (:func:`dynkit.theory.stax_blocks.sum_kernels`).

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.FanInSum``); He et al. 2016 (residuals).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0]]), None, False, False)
        >>> FanInSum().kernel([k, k, k]).nngp.tolist()
        [[3.0]]
    """

    name = "FanInSum"

    def out_shape(self, in_shape):
        _check_list(self, in_shape)
        if any(tuple(s) != tuple(in_shape[0]) for s in in_shape):
            raise self.shape_error(f"inputs must have equal shapes, got "
                                   f"{[tuple(s) for s in in_shape]}")
        return in_shape[0]

    def apply(self, params, x, **kwargs):
        return sum(x[1:], x[0])

    def kernel(self, ks):
        return sum_kernels(ks)


class FanInConcat(Layer):
    """Concatenate a list of inputs along the channel axis. Kernel: the block-structured
    kernel of the inputs (:class:`dynkit.theory.stax_blocks.BlockKernel`): elementwise layers,
    pooling and ``LayerNorm`` act per block; a channel-mixing layer (or the network's output)
    sees the channel-weighted mean ``sum_i C_i K_i / sum_i C_i``.

    Args:
        axis: only ``-1`` (channels) is supported.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.FanInConcat``).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k1 = input_kernel(jnp.array([[2.0]]), None, False, False)          # 4, 1 channel
        >>> k3 = input_kernel(jnp.array([[1.0, 1.0, 1.0]]), None, False, False)  # 1, 3 channels
        >>> from dynkit.theory.stax_blocks import merge_blocks
        >>> merge_blocks(FanInConcat().kernel([k1, k3])).nngp.tolist()        # (4 + 3) / 4
        [[1.75]]
    """

    name = "FanInConcat"

    def __init__(self, axis=-1):
        if axis != -1:
            raise UnsupportedLayerError(f"FanInConcat: only axis=-1 (channels) is supported, "
                                        f"got axis={axis!r}")

    def out_shape(self, in_shape):
        _check_list(self, in_shape)
        if any(tuple(s[:-1]) != tuple(in_shape[0][:-1]) for s in in_shape):
            raise self.shape_error(f"inputs must agree except in channels, got "
                                   f"{[tuple(s) for s in in_shape]}")
        return tuple(in_shape[0][:-1]) + (sum(s[-1] for s in in_shape),)

    def apply(self, params, x, **kwargs):
        return jnp.concatenate(x, axis=-1)

    def kernel(self, ks):
        return concat_kernels(ks)
