"""Layers that act position by position: elementwise nonlinearities, layer normalization and
the identity. Their kernel maps are per-entry functions of ``(q11, q12, q22)`` (``pointwise``):
the dual activation of Jacot et al. 2018 / Cho & Saul 2009, and ``LayerNorm``'s division by
``sqrt(q11 q22)`` (Novak et al. 2020)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp

from dynkit.errors import UnsupportedLayerError
from dynkit.theory.stax_kernel import Kernel, Layer, map_optional, spatial_diag

__all__ = ["Elementwise", "Identity", "LayerNorm", "pointwise", "variances"]


def variances(k: Kernel):
    """Per-position variances ``(v1 (N1, *S), v2 (N2, *S))`` of x1 and x2.

    Args:
        k: a :class:`~dynkit.theory.stax_kernel.Kernel`.

    Returns:
        ``(v1, v2)``; ``v2`` is ``v1`` when x2 is x1.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> v1, v2 = variances(input_kernel(jnp.array([[1.0, 1.0], [2.0, 0.0]]), None, False, False))
        >>> v1.tolist()
        [1.0, 2.0]
    """
    if k.cov is None:
        v = jnp.moveaxis(jnp.diagonal(k.nngp, axis1=0, axis2=1), -1, 0)
        v = spatial_diag(v, 1, k.spatial) if k.full else v
        return v, v
    v = spatial_diag(k.cov, 1, k.spatial) if k.full else k.cov
    n1 = k.nngp.shape[0]
    return v[:n1], v[n1:]


def pointwise(k: Kernel, fn, var=None) -> Kernel:
    """Apply a per-entry map ``fn(q11, q12, q22, ntk) -> (q12', ntk')`` to ``nngp``/``ntk``
    (with the matching variances ``q11, q22``) and ``fn(c11, c, c22, None)[0]`` to ``cov``.
    Spatial axes are flattened to one pixel axis first (fewer, faster-compiling loops).

    Args:
        k: the input :class:`~dynkit.theory.stax_kernel.Kernel`.
        fn: the per-entry map (broadcasting arrays; ``ntk`` may be None).
        var: ``(v1, v2)`` to use as ``q11, q22`` instead of :func:`variances` of ``k`` (a
            block of a concatenation normalized by all channels, see ``stax_blocks``).

    Returns:
        The mapped kernel.

    References:
        Jacot et al. 2018 (``Θ' = Θ K̇'``); Novak et al. 2020.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0], [2.0, 0.0]]), None, False, False)
        >>> pointwise(k, lambda q11, q12, q22, t: (q12 / (q11 * q22), t)).nngp.tolist()
        [[1.0, 0.5], [0.5, 0.5]]
    """
    v1, v2 = variances(k) if var is None else var
    p = math.prod(k.spatial)
    n1, n2 = v1.shape[0], v2.shape[0]
    v1, v2 = v1.reshape(n1, -1), v2.reshape(n2, -1)
    if not k.spatial:
        q11, q22, shape, cshape = v1, v2.T, (n1, n2), (-1,)
    elif not k.full:
        q11, q22, shape, cshape = v1[:, None], v2[None], (n1, n2, p), (-1, p)
    else:
        q11, q22 = v1[:, None, :, None], v2[None, :, None, :]
        shape, cshape = (n1, n2, p, p), (-1, p, p)
    nngp, ntk = fn(q11, k.nngp.reshape(shape), q22, map_optional(lambda t: t.reshape(shape), k.ntk))
    cov = None
    if k.cov is not None:
        v = jnp.concatenate([v1, v2])
        c = k.cov.reshape(cshape)
        if not k.spatial:
            cov = fn(v[:, 0], c, v[:, 0], None)[0]
        elif not k.full:
            cov = fn(v, c, v, None)[0]
        else:
            cov = fn(v[:, :, None], c, v[:, None, :], None)[0]
        cov = cov.reshape(k.cov.shape)
    return k.replace(nngp=nngp.reshape(k.nngp.shape),
                     ntk=map_optional(lambda t: t.reshape(k.nngp.shape), ntk), cov=cov)



class Identity(Layer):
    """The identity layer: ``K' = K``, ``Θ' = Θ``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.Identity``).

    Example:
        >>> Identity().out_shape((3,))
        (3,)
    """
    name = "Identity"
    per_block = True


class LayerNorm(Layer):
    """Layer normalization over the channel axis, ``(x - mean_c x) / sqrt(var_c x + eps)``.
    At infinite width the channel mean vanishes and the variance is ``q(x)``, so
    ``nngp' = nngp / sqrt(q11 q22)`` and ``ntk' = ntk / sqrt(q11 q22)`` (Novak et al. 2020).

    Args:
        axis: only ``-1`` (channels) is supported; eps: added to the finite variance.

    References:
        Ba et al. 2016 (layer normalization); Novak et al. 2020.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0], [2.0, 0.0]]), None, False, False)
        >>> [round(float(v), 6) for v in LayerNorm().kernel(k).nngp[0]]
        [1.0, 0.707107]
    """

    name = "LayerNorm"

    def __init__(self, axis=-1, eps=1e-12):
        axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
        if axes != (-1,):
            raise UnsupportedLayerError(f"LayerNorm: only axis=-1 (channels) is supported, got "
                                        f"axis={axis!r}")
        self.eps = float(eps)

    def apply(self, params, x, **kwargs):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.var(x, -1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + self.eps)

    def kernel(self, k, var=None):
        def fn(q11, q12, q22, ntk):
            norm = jnp.sqrt(q11 * q22)
            return q12 / norm, map_optional(lambda t: t / norm, ntk)

        return pointwise(k, fn, var)


class Elementwise(Layer):
    """Elementwise nonlinearity ``fn`` with dual ``dual(q11, q12, q22) -> (nngp, dnngp)``:
    ``nngp' = nngp_dual``, ``ntk' = ntk * dnngp`` (Jacot et al. 2018).

    Args:
        name: the layer's name; fn: the activation; dual: its dual (e.g. from
            :mod:`dynkit.theory.dual_activations`).

    References:
        Neal 1996; Cho & Saul 2009; Lee et al. 2018; Jacot et al. 2018.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from dynkit.theory import dual_activations as duals
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0], [1.0, -1.0]]), None, False, False)
        >>> relu = Elementwise("Relu", jax.nn.relu, duals.relu_dual)
        >>> [round(float(v), 6) for v in relu.kernel(k).nngp[0]]      # [1/2, 1/(2π)]
        [0.5, 0.159155]
    """

    per_block = True

    def __init__(self, name: str, fn: Callable, dual: Callable):
        self.name, self.fn, self.dual = name, fn, dual

    def apply(self, params, x, **kwargs):
        return self.fn(x)

    def kernel(self, k):
        def fn(q11, q12, q22, ntk):
            nngp, dnngp = self.dual(q11, q12, q22)
            return nngp, map_optional(lambda t: t * dnngp, ntk)

        return pointwise(k, fn)

