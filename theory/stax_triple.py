"""The ``(init_fn, apply_fn, kernel_fn)`` triple of a ``stax`` layer (Novak et al. 2020).

:class:`KernelFn` is the jitted ``kernel_fn(x1, x2=None, get=None)``: it checks the inputs,
builds the input kernel (a first ``Conv`` reads it off the patch Gram matrix), runs the
layer's recursion, tiles ``kernel_fn(x, None)`` for 64 or more inputs
(:func:`dynkit.theory.stax_batching.symmetric_tiles`) and returns spatial kernels in the
neural-tangents layout ``(N1, N2, H, H', W, W')``. :func:`triple` wraps an internal layer of
:mod:`dynkit.theory.stax_layers`; :func:`layer_of` unwraps it.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import stax_layers as L
from dynkit.theory.stax_batching import symmetric_blocks, symmetric_tiles
from dynkit.theory.stax_blocks import merge_blocks
from dynkit.validation import check_finite

__all__ = ["KernelFn", "layer_of", "triple"]

_GETS = ("nngp", "ntk")


@functools.cache
def _namedtuple(fields: tuple):
    return collections.namedtuple("Kernels", fields)


def _parse_get(get):
    """``get`` -> (tuple of names, how to return): 'kernel' | 'single' | 'tuple'."""
    if get is None:
        return _GETS, "kernel"
    names = (get,) if isinstance(get, str) else tuple(get)
    bad = [g for g in names if g not in _GETS]
    if bad or not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"get must be 'nngp', 'ntk', a tuple of them or None, "
                                   f"got {get!r}")
    return names, ("single" if isinstance(get, str) else "tuple")


def _nt_layout(t, nb: int, d: int):
    """``(*batch, *S, *S')`` -> neural-tangents' interleaved ``(*batch, S0, S0', S1, S1', ...)``."""
    perm = list(range(nb)) + [a for i in range(d) for a in (nb + i, nb + d + i)]
    return jnp.transpose(t, perm)


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.zeros(()).dtype)


def _check_inputs(x1, x2):
    if x1.ndim < 2:
        raise ShapeMismatchError(f"kernel_fn: x1 must have a batch axis and features, "
                                 f"(N, ...), got shape {x1.shape}")
    if x2 is not None and x2.shape[1:] != x1.shape[1:]:
        raise ShapeMismatchError(f"kernel_fn: x1 and x2 must have the same per-sample shape, "
                                 f"got {x1.shape} and {x2.shape}")
    for name, x in (("x1", x1), ("x2", x2)):
        check_finite(f"kernel_fn: {name}", x)


class KernelFn:
    """Callable ``kernel_fn(x1, x2=None, get=None)`` of a layer (see :mod:`dynkit.theory.stax`).

    ``kernel_fn(x1, x2, get)`` runs the layer's kernel recursion on the input kernel
    ``K = x1 . x2 / C`` (``Θ = 0``); ``get`` is ``"nngp"``/``"ntk"`` (an array), a tuple of
    them (a namedtuple) or None (the :class:`~dynkit.theory.stax_kernel.Kernel`); ``x2=None``
    means ``x2 = x1``.

    Args:
        layer: the :class:`dynkit.theory.stax_kernel.Layer` whose output kernel it computes.

    References:
        Novak et al. 2020, "Neural Tangents" (``kernel_fn``).

    Example:
        >>> from dynkit.theory import stax_layers
        >>> kernel_fn = KernelFn(stax_layers.Dense(3, W_std=2.0))
        >>> kernel_fn(jnp.array([[1.0, 1.0], [1.0, -1.0]]), None, "nngp").tolist()
        [[4.0, 0.0], [0.0, 4.0]]
    """

    def __init__(self, layer: L.Layer):
        self.layer = layer
        self._jitted = jax.jit(self._compute, static_argnames=("names",))

    def _compute(self, x1, x2, names):
        per = tuple(x1.shape[1:])
        out = self.layer.out_shape(per)
        if isinstance(out, list):
            raise ShapeMismatchError(f"{self.layer.describe()}: the network ends with "
                                     f"{len(out)} outputs; merge them with FanInSum/FanInConcat")
        out_full = len(out) > 1
        n_blocks = symmetric_blocks(x1.shape[0]) if x2 is None else 1
        if n_blocks == 1:
            return self._kernel(x1, x2, names, out_full)
        return symmetric_tiles(lambda a, b: self._kernel(a, b, names, out_full).replace(cov=None),
                               x1, n_blocks)

    def _kernel(self, x1, x2, names, out_full):
        in_full = self.layer.needs_full(out_full) and x1.ndim > 2
        first, rest = L.split_first(self.layer)
        if isinstance(first, L.Conv):  # reads the inputs: the patch Gram, see Conv.input_kernel
            k = first.input_kernel(x1, x2, in_full, "ntk" in names)
        else:
            rest = self.layer
            k = L.input_kernel(x1, x2, in_full, "ntk" in names)
        if rest is not None:
            k = merge_blocks(L.kernel_of(rest, k, out_full))
        if k.full:
            d = len(k.spatial)
            k = k.replace(nngp=_nt_layout(k.nngp, 2, d),
                          ntk=None if k.ntk is None else _nt_layout(k.ntk, 2, d),
                          cov=None if k.cov is None else _nt_layout(k.cov, 1, d))
        if "ntk" not in names:
            k = k.replace(ntk=None)
        return k

    def __call__(self, x1, x2=None, get=None):
        names, mode = _parse_get(get)
        x1 = _float(x1)
        if x2 is not None:
            x2 = _float(x2)
            dtype = jnp.promote_types(x1.dtype, x2.dtype)
            x1, x2 = x1.astype(dtype), x2.astype(dtype)
        _check_inputs(x1, x2)
        k = self._jitted(x1, x2, names)
        if mode == "kernel":
            return k
        if mode == "single":
            return getattr(k, names[0])
        return _namedtuple(names)(*(getattr(k, g) for g in names))


def _per_sample(shape):
    if isinstance(shape, list):
        return [_per_sample(s) for s in shape]
    return tuple(shape[1:])


def _with_batch(batch_dim, shape):
    if isinstance(shape, list):
        return [_with_batch(batch_dim, s) for s in shape]
    return (batch_dim,) + tuple(shape)


def _batch_dim(shape):
    return _batch_dim(shape[0]) if isinstance(shape, list) else shape[0]


def triple(layer: L.Layer):
    """Wrap an internal layer as ``(init_fn, apply_fn, kernel_fn)``.

    Args:
        layer: a :class:`dynkit.theory.stax_kernel.Layer` (e.g. from
            :mod:`dynkit.theory.stax_layers`).

    Returns:
        ``init_fn(key, input_shape) -> (output_shape, params)`` and ``apply_fn(params, x)``
        (shapes with the batch axis; both carry ``.layer``) and the :class:`KernelFn`.

    References:
        Novak et al. 2020, "Neural Tangents" (the triple convention).

    Example:
        >>> from dynkit.theory import stax_layers
        >>> init_fn, apply_fn, kernel_fn = triple(stax_layers.Dense(3))
        >>> out_shape, (w, b) = init_fn(jax.random.PRNGKey(0), (5, 2))
        >>> out_shape, w.shape, b
        ((5, 3), (2, 3), None)
    """

    def init_fn(key, input_shape):
        per = _per_sample(input_shape)
        out = layer.out_shape(per)
        return _with_batch(_batch_dim(input_shape), out), layer.init(key, per)

    def apply_fn(params, x, **kwargs):
        return layer.apply(params, x, **kwargs)

    init_fn.layer = apply_fn.layer = layer
    return init_fn, apply_fn, KernelFn(layer)


def layer_of(layer_triple) -> L.Layer:
    """The internal layer behind a triple made by :func:`triple`.

    Args:
        layer_triple: ``(init_fn, apply_fn, kernel_fn)`` from :mod:`dynkit.theory.stax`.

    Returns:
        Its :class:`dynkit.theory.stax_kernel.Layer`.

    Raises:
        InvalidArgumentError: when ``layer_triple`` is not such a triple.

    Example:
        >>> from dynkit.theory import stax_layers
        >>> layer_of(triple(stax_layers.Dense(3))).describe()
        'Dense'
    """
    try:
        kernel_fn = layer_triple[2]
    except (TypeError, IndexError, KeyError):
        kernel_fn = None
    if not isinstance(kernel_fn, KernelFn):
        raise InvalidArgumentError(f"expected a stax layer triple (init_fn, apply_fn, kernel_fn) "
                                   f"from dynkit.theory.stax, got {type(layer_triple).__name__}")
    return kernel_fn.layer
