"""The infinite-width ``Kernel`` object, its layouts, the input kernel and the ``Layer`` base.

Every layer knows four things: its output shape (per sample, no batch axis), how to draw
parameters and apply the finite network, how it maps an infinite-width ``Kernel`` to the
next one, and whether it needs the full pixel-pixel covariance of its input.

Kernel layout (``N1, N2`` batch sizes, ``S`` the spatial shape, ``d = len(S)``):

* fully connected: ``nngp, ntk (N1, N2)``, ``cov (N1 + N2,)``
* spatial, diagonal: ``nngp, ntk (N1, N2, *S)``, ``cov (N1 + N2, *S)`` (only ``s == s'``)
* spatial, full: ``nngp, ntk (N1, N2, *S, *S)``, ``cov (N1 + N2, *S, *S)``

``cov`` holds the self-covariances of x1 and x2 stacked; it is None when x2 is x1 (the
batch diagonal of ``nngp`` is then the same thing, and each layer does one op less).
Covariances are channel-averaged (``x1 . x2 / C``), as in neural-tangents (Novak et al. 2020).
The recursions are those of Lee et al. 2018 (NNGP), Jacot et al. 2018 (NTK), Novak et al. 2019
and Arora et al. 2019 (CNN-GP / CNTK, pooling).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from dynkit.errors import ShapeMismatchError

__all__ = [
    "Kernel",
    "Layer",
    "check_single_input",
    "coerce",
    "input_kernel",
    "map_optional",
    "spatial_diag",
    "to_diag",
]

Array = Any


@dataclasses.dataclass(frozen=True)
class Kernel:
    """Infinite-width kernel of a layer's output (a pytree; ``shape1``, ``full`` static).

    ``nngp``: NNGP covariance of x1 vs x2; ``ntk``: NTK (None when not requested);
    ``cov``: batch-diagonal self-covariances of ``[x1; x2]`` stacked, ``(N1 + N2, ...)``, or
    None when x2 is x1 (then they are the batch diagonal of ``nngp``); ``shape1``: per-sample
    output shape (channels last); ``full``: spatial off-diagonal pixel pairs tracked.
    ``cov1``/``cov2`` give the x1/x2 self-covariances (``cov2`` is None when x2 is x1).

    References:
        Lee et al. 2018 (NNGP); Jacot et al. 2018 (NTK); Novak et al. 2020 (``Kernel``).

    Example:
        >>> import jax.numpy as jnp
        >>> k = input_kernel(jnp.array([[1.0, 1.0], [2.0, 0.0]]), None, False, True)
        >>> k.nngp.tolist(), k.cov1.tolist(), k.cov2, k.shape1
        ([[1.0, 1.0], [1.0, 2.0]], [1.0, 2.0], None, (2,))
    """

    nngp: Array
    ntk: Array | None
    cov: Array | None
    shape1: tuple = ()
    full: bool = False

    def replace(self, **kw) -> Kernel:
        return dataclasses.replace(self, **kw)

    @property
    def spatial(self) -> tuple:
        return tuple(self.shape1[:-1])

    @property
    def cov1(self) -> Array:
        if self.cov is None:
            return jnp.moveaxis(jnp.diagonal(self.nngp, axis1=0, axis2=1), -1, 0)
        return self.cov[: self.nngp.shape[0]]

    @property
    def cov2(self) -> Array | None:
        return None if self.cov is None else self.cov[self.nngp.shape[0]:]


jax.tree_util.register_dataclass(
    Kernel, data_fields=["nngp", "ntk", "cov"], meta_fields=["shape1", "full"])


def map_optional(fn, *xs):
    """Apply ``fn`` to the non-None arguments, keep None.

    Args:
        fn: a function of ``len(xs)`` arguments.
        *xs: its arguments; when the first is None, so is the result.

    Returns:
        ``fn(*xs)``, or None.

    Example:
        >>> map_optional(lambda a: a + 1, 1), map_optional(lambda a: a + 1, None)
        (2, None)
    """
    return None if xs[0] is None else fn(*xs)


def spatial_diag(x: Array, nb: int, spatial: tuple) -> Array:
    """``x[..., s, s']`` laid out ``(*batch, *S, *S)`` -> its diagonal ``(*batch, *S)``.

    Args:
        x: a kernel with ``nb`` batch axes and two sets of spatial axes.
        nb: the number of batch axes; spatial: the spatial shape ``S``.

    Returns:
        ``x[..., s, s]``, shape ``(*batch, *S)``.

    Example:
        >>> import jax.numpy as jnp
        >>> spatial_diag(jnp.arange(4.0).reshape(1, 2, 2), 1, (2,)).tolist()
        [[0.0, 3.0]]
    """
    p = math.prod(spatial)
    flat = x.reshape(x.shape[:nb] + (p, p))
    return jnp.diagonal(flat, axis1=-2, axis2=-1).reshape(x.shape[:nb] + tuple(spatial))


def to_diag(k: Kernel) -> Kernel:
    """Drop the spatial off-diagonal entries of a full kernel.

    Args:
        k: a :class:`Kernel` (returned as is when not ``full``).

    Returns:
        The kernel with ``nngp[..., s, s]`` etc. and ``full=False``.

    Example:
        >>> import jax.numpy as jnp
        >>> k = input_kernel(jnp.ones((1, 3, 2)), None, True, False)
        >>> k.nngp.shape, to_diag(k).nngp.shape
        ((1, 1, 3, 3), (1, 1, 3))
    """
    if not k.full:
        return k
    s = k.spatial
    return k.replace(nngp=spatial_diag(k.nngp, 2, s),
                     ntk=map_optional(lambda t: spatial_diag(t, 2, s), k.ntk),
                     cov=map_optional(lambda c: spatial_diag(c, 1, s), k.cov), full=False)


def coerce(ks, full: bool):
    """Bring a kernel (or list of kernels) down to diagonal form when ``full`` is False.

    Args:
        ks: a :class:`Kernel` or a list of them.
        full: whether the consumer needs the spatial off-diagonal pairs.

    Returns:
        ``ks`` unchanged when ``full``, else :func:`to_diag` of each.

    Example:
        >>> import jax.numpy as jnp
        >>> k = input_kernel(jnp.ones((1, 3, 2)), None, True, False)
        >>> [c.full for c in coerce([k, k], False)]
        [False, False]
    """
    if isinstance(ks, (list, tuple)):
        return [coerce(k, full) for k in ks]
    return ks if full else to_diag(ks)


def input_kernel(x1: Array, x2: Array | None, full: bool, compute_ntk: bool) -> Kernel:
    """Kernel of the inputs: ``nngp = x1 . x2 / C`` over the channel (last) axis.

    Args:
        x1, x2: inputs ``(N, *S, C)``; ``x2=None`` means ``x2 = x1`` (``cov`` then None).
        full: keep the spatial off-diagonal pairs ``x1[s] . x2[s'] / C``.
        compute_ntk: track the NTK (zero for the inputs).

    Returns:
        The :class:`Kernel` of the inputs.

    References:
        Novak et al. 2020, "Neural Tangents" (channel-averaged covariances).

    Example:
        >>> import jax.numpy as jnp
        >>> input_kernel(jnp.array([[1.0, 1.0], [1.0, -1.0]]), None, False, True).ntk.tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    shape1 = tuple(x1.shape[1:])
    c = shape1[-1]
    both = None if x2 is None else jnp.concatenate([x1, x2])
    if len(shape1) == 1:
        nngp = x1 @ (x1 if x2 is None else x2).T / c
        cov = map_optional(lambda b: jnp.sum(b * b, -1) / c, both)
    else:
        s = shape1[:-1]
        p = math.prod(s)
        flat = lambda x: x.reshape(x.shape[0], p, c)
        f1 = flat(x1)
        f2 = f1 if x2 is None else flat(x2)
        fb = map_optional(flat, both)
        n1, n2 = f1.shape[0], f2.shape[0]
        if full:
            nngp = jnp.einsum("apc,bqc->abpq", f1, f2).reshape((n1, n2) + s + s)
            cov = map_optional(lambda f: jnp.einsum("apc,aqc->apq", f, f).reshape((f.shape[0],) + s + s),
                       fb)
        else:
            nngp = jnp.einsum("apc,bpc->abp", f1, f2).reshape((n1, n2) + s)
            cov = map_optional(lambda f: jnp.sum(f * f, -1).reshape((f.shape[0],) + s), fb)
        nngp = nngp / c
        cov = map_optional(lambda t: t / c, cov)
    ntk = jnp.zeros_like(nngp) if compute_ntk else None
    return Kernel(nngp, ntk, cov, shape1, full and len(shape1) > 1)


class Layer:
    """Base class; subclasses override what they need. ``label`` names it in errors.

    A layer knows its per-sample output shape (``out_shape``), its parameters and finite
    network (``init``, ``apply``), its kernel map (``kernel``: ``Kernel -> Kernel``, here the
    identity) and whether it needs the full pixel-pixel covariance (``needs_full``).
    ``per_block = True`` declares that it acts on each channel alone, so after a
    concatenation it is applied to each block's kernel; other layers see the merged kernel
    (:mod:`dynkit.theory.stax_blocks`).

    Example:
        >>> import jax.numpy as jnp
        >>> k = input_kernel(jnp.ones((2, 3)), None, False, False)
        >>> Layer().kernel(k) is k, Layer().describe()
        (True, 'Layer')
    """

    name = "Layer"
    label = None
    per_block = False  # True: acts on each channel alone (see dynkit.theory.stax_blocks)

    def describe(self) -> str:
        return self.label or self.name

    def out_shape(self, in_shape):
        return in_shape

    def init(self, key, in_shape):
        return ()

    def apply(self, params, x, **kwargs):
        return x

    def kernel(self, k):
        return k

    def needs_full(self, out_full: bool) -> bool:
        return out_full

    def shape_error(self, msg: str) -> ShapeMismatchError:
        return ShapeMismatchError(f"{self.describe()}: {msg}")


def check_single_input(layer: Layer, in_shape):
    """Raise the layer's shape error when it gets a list of inputs instead of one.

    Args:
        layer: the :class:`Layer` (named in the error).
        in_shape: its per-sample input shape (a list means several inputs).

    Raises:
        ShapeMismatchError: when ``in_shape`` is a list.

    Example:
        >>> check_single_input(Layer(), (3,)) is None
        True
    """
    if isinstance(in_shape, list):
        raise layer.shape_error(f"expects one input, got a list of {len(in_shape)} "
                                "(missing FanInSum/FanInConcat?)")
