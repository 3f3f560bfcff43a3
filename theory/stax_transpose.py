"""Transposed convolution in the ``stax`` vocabulary (neural-tangents' ``ConvTranspose``).

``lax.conv_transpose(x, W, strides, padding)`` is a stride-1 convolution of the input dilated
by ``strides`` (``strides - 1`` zeros between pixels) and padded by
:func:`transpose_pads` per axis. The kernel
recursion is therefore the CNN-GP one (Novak et al. 2019) applied to the dilated, padded
input kernel: ``K'[s, s'] = W_std² / |f| sum_o K_dil[s + o, s' + o] + b_std²`` over the filter
offsets ``o``; only the spatial diagonal is needed for a diagonal output.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dynkit.theory.stax_kernel import Kernel, input_kernel
from dynkit.theory.stax_spatial import _CONV_SPECS, Conv, joint_linear

__all__ = ["ConvTranspose", "transpose_pads"]


def transpose_pads(k: int, s: int, padding: str) -> tuple[int, int]:
    """Padding ``(lo, hi)`` of the dilated input that makes ``lax.conv_transpose`` a stride-1
    convolution (``"VALID"``: ``lo = k - 1``; ``"SAME"``: the window centred).

    Args:
        k: filter size; s: stride; padding: ``"SAME"`` or ``"VALID"``.

    Returns:
        ``(lo, hi)``; the output size is ``(n - 1) s + 1 + lo + hi - k + 1``.

    References:
        Dumoulin & Visin 2016, "A guide to convolution arithmetic for deep learning".

    Example:
        >>> transpose_pads(2, 2, "VALID"), transpose_pads(3, 2, "SAME")
        ((1, 1), (2, 1))
    """
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
    else:
        total = k + s - 2 + max(k - s, 0)
        lo = k - 1
    return lo, total - lo


def _tile(t, nb: int, n_sets: int, window: tuple):
    """The recursion when ``strides == filter_shape`` with ``"VALID"`` padding (the usual
    U-Net up-convolution): output pixel ``s = p f + o`` sees input pixel ``p`` through filter
    offset ``o`` only, so ``K'[p f + o, p' f + o'] = K[p, p'] [o = o'] / |f|`` (a broadcast, no
    padding or shifted sums)."""
    spatial = t.shape[nb:]
    expanded = t.reshape(t.shape[:nb] + tuple(a for n in spatial for a in (n, 1)))
    mask = np.ones(window) if n_sets == 1 else _offset_delta(window)
    shape = (1,) * nb + tuple(a for w in window * n_sets for a in (1, w))
    out = expanded * jnp.asarray(mask.reshape(shape) / math.prod(window), t.dtype)
    return out.reshape(t.shape[:nb] + tuple(n * w for n, w in zip(spatial, window * n_sets)))


def _offset_delta(window: tuple) -> np.ndarray:
    """``delta[o, o'] = [o = o']`` over the filter offsets, laid out ``(*window, *window)``."""
    size = math.prod(window)
    return np.eye(size).reshape(window * 2)


class ConvTranspose(Conv):
    """Transposed convolution (``lax.conv_transpose``, weights ``(*filter, C_in, C_out)``).

    Kernel: the :class:`~dynkit.theory.stax_spatial.Conv` recursion on the input kernel
    dilated by the strides and padded by :func:`transpose_pads`, with stride 1 and
    ``fan_in = C_in prod(filter)`` (neural-tangents' normalization).

    Args:
        out_chan, filter_shape, strides, padding, W_std, b_std, parameterization: as for
            :func:`dynkit.theory.stax.ConvTranspose`.

    References:
        Dumoulin & Visin 2016; Novak et al. 2019; Novak et al. 2020 (``stax.ConvTranspose``).

    Example:
        >>> import jax.numpy as jnp
        >>> k = ConvTranspose(4, (2,), (2,), W_std=2.0).kernel(
        ...     input_kernel(jnp.ones((1, 2, 1)), None, False, True))
        >>> k.nngp.tolist(), k.shape1                  # each output pixel sees one input pixel
        ([[[2.0, 2.0, 2.0, 2.0]]], (4, 4))
    """

    name = "ConvTranspose"

    def _pads(self, spatial):
        return [transpose_pads(k, s, self.padding) for k, s in zip(self.filter_shape, self.strides)]

    def _geometry(self, spatial):
        pads = self._pads(spatial)
        out = tuple((n - 1) * s + 1 + lo + hi - k + 1 for n, k, s, (lo, hi)
                    in zip(spatial, self.filter_shape, self.strides, pads))
        return pads, out

    def linear_map(self, x, w):
        return lax.conv_transpose(x, w, self.strides, self.padding,
                                  dimension_numbers=_CONV_SPECS[len(self.filter_shape)])

    def kernel(self, k: Kernel) -> Kernel:
        pads, out = self._geometry(k.spatial)
        n_sets = 2 if k.full else 1
        tiling = self.padding == "VALID" and self.strides == self.filter_shape

        def conv(t, nb):
            if tiling:
                return _tile(t, nb, n_sets, self.filter_shape)
            cfg = [(0, 0, 0)] * nb + [(lo, hi, s - 1) for (lo, hi), s
                                      in zip(pads, self.strides)] * n_sets
            tp = lax.pad(t, jax.numpy.zeros((), t.dtype), cfg)
            total = 0.0
            for off in itertools.product(*[range(f) for f in self.filter_shape]):
                idx = (slice(None),) * nb + tuple(slice(o, o + n) for o, n in zip(off, out)) \
                    * n_sets
                total = total + tp[idx]
            return total / math.prod(self.filter_shape)

        nngp_u, ntk_u, cov_u = joint_linear(k, conv)
        return self._affine(k.shape1[-1], nngp_u, ntk_u, cov_u, k.ntk is not None, out, k.full)

    def input_kernel(self, x1, x2, full, compute_ntk):
        """The output kernel when this layer reads the network inputs (no patch shortcut)."""
        return self.kernel(input_kernel(x1, x2, full, compute_ntk))
