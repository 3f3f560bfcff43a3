"""Locally connected layer (an unshared convolution) in the ``stax`` vocabulary
(neural-tangents' ``ConvLocal``).

Each output position ``s`` has its own filter and bias, independent of the others, so output
positions are uncorrelated: ``K'[s, s'] = 0`` for ``s != s'`` and on the diagonal the CNN-GP
recursion ``K'[s, s] = W_std² mean_o K[s + o, s + o] + b_std²`` (Novak et al. 2019, "Bayesian
deep convolutional networks with many channels are Gaussian processes", where LCNs are the
CNN-GP without weight sharing).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from dynkit.theory.stax_kernel import Kernel, map_optional, to_diag
from dynkit.theory.stax_spatial import _CONV_SPECS, Conv

__all__ = ["ConvLocal", "embed_diagonal"]


def embed_diagonal(t, nb: int, spatial: tuple):
    """``t[..., s]`` -> ``out[..., s, s'] = t[..., s] [s = s']`` (zeros off the diagonal).

    Args:
        t: an array with ``nb`` batch axes and the spatial axes ``spatial``.
        nb: the number of batch axes; spatial: the spatial shape ``S``.

    Returns:
        The full-layout array ``(*batch, *S, *S)``.

    Example:
        >>> import jax.numpy as jnp
        >>> embed_diagonal(jnp.array([[1.0, 2.0]]), 1, (2,)).tolist()
        [[[1.0, 0.0], [0.0, 2.0]]]
    """
    p = math.prod(spatial)
    flat = t.reshape(t.shape[:nb] + (p,))
    full = flat[..., :, None] * jnp.eye(p, dtype=t.dtype)
    return full.reshape(t.shape[:nb] + tuple(spatial) * 2)


def _embed(k: Kernel) -> Kernel:
    s = k.spatial
    return k.replace(nngp=embed_diagonal(k.nngp, 2, s),
                     ntk=map_optional(lambda t: embed_diagonal(t, 2, s), k.ntk),
                     cov=map_optional(lambda c: embed_diagonal(c, 1, s), k.cov), full=True)


class ConvLocal(Conv):
    """Locally connected layer: a convolution whose filter and bias differ at every output
    position (weights ``(*out_spatial, C_in prod(filter), C_out)``).

    Kernel: the diagonal CNN-GP recursion of :class:`~dynkit.theory.stax_spatial.Conv`, and
    zero between different output positions (when the layers after it need pixel pairs).

    Args:
        out_chan, filter_shape, strides, padding, W_std, b_std, parameterization: as for
            :func:`dynkit.theory.stax.ConvLocal`.

    References:
        Novak et al. 2019; Novak et al. 2020 (``stax.ConvLocal``).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = ConvLocal(4, (2,), W_std=2.0, b_std=1.0).kernel(
        ...     input_kernel(jnp.ones((1, 3, 1)), None, True, False))
        >>> k.nngp[0, 0].tolist()
        [[5.0, 0.0], [0.0, 5.0]]
    """

    name = "ConvLocal"

    def init(self, key, in_shape):
        k1, k2 = jax.random.split(key)
        out = self.out_shape(in_shape)
        fan_in = in_shape[-1] * math.prod(self.filter_shape)
        w = jax.random.normal(k1, out[:-1] + (fan_in, self.out_chan))
        b = None if self.b_std is None else jax.random.normal(k2, out)
        if self.parameterization == "standard":
            w = w * (self.W_std / math.sqrt(fan_in))
            b = None if b is None else b * self.b_std
        return (w, b)

    def linear_map(self, x, w):
        return lax.conv_general_dilated_local(
            x, w, self.strides, self.padding, self.filter_shape,
            dimension_numbers=_CONV_SPECS[len(self.filter_shape)])

    def needs_full(self, out_full):
        return out_full

    def kernel(self, k: Kernel) -> Kernel:
        full = k.full
        out = super().kernel(to_diag(k))
        return _embed(out) if full else out

    def input_kernel(self, x1, x2, full, compute_ntk):
        """The patch-Gram shortcut of :meth:`Conv.input_kernel` on the diagonal, embedded."""
        out = super().input_kernel(x1, x2, False, compute_ntk)
        return _embed(out) if full and x1.ndim > 2 else out
