"""Dropout in the ``stax`` vocabulary: the train-mode kernel of inverted dropout.

Each unit is kept with probability ``rate`` (neural-tangents' convention: ``rate`` is the keep
probability) and scaled by ``1 / rate``. A unit's second moment becomes ``E[m²] / rate² q =
q / rate``, while two different inputs (or positions) draw independent masks, so their
covariance is unchanged. In the infinite-width limit the kernel is that of a Gaussian process
with the self-variances (the batch and spatial diagonal) multiplied by ``1 / rate``
(Novak et al. 2020, ``stax.Dropout``). As in neural-tangents, the output is not Gaussian: the
kernel is exact for a linear layer (``Dense``/``Conv``) next, which makes it Gaussian again.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dynkit.errors import InvalidArgumentError
from dynkit.theory.stax_kernel import Kernel, Layer, map_optional

__all__ = ["Dropout"]


def _scale_diagonal(t, factor, nb: int, spatial: tuple, full: bool, batch_diag: bool):
    """Multiply the entries ``t[i, (i,) s, s]`` by ``factor`` (``batch_diag``: only where the
    two batch indices agree; ``full``: only where the two positions agree)."""
    mask = jnp.ones((), bool)
    if batch_diag:
        n = t.shape[0]
        eye = jnp.eye(n, dtype=bool)
        mask = eye.reshape((n, n) + (1,) * (t.ndim - 2))
    if full:
        p = math.prod(spatial)
        eye = jnp.eye(p, dtype=bool).reshape(tuple(spatial) * 2)
        mask = mask & eye.reshape((1,) * nb + eye.shape)
    return jnp.where(mask, factor * t, t)


class Dropout(Layer):
    """Inverted dropout, keep probability ``rate``: ``y = m x / rate``, ``m ~ Bernoulli(rate)``.

    Train-mode kernel: ``K'[x, x', s, s'] = K[x, x', s, s'] (1 + (1/rate - 1) [x = x', s = s'])``,
    same for ``Θ``; test mode is the identity. ``x = x'`` means the same input (``kernel_fn(x,
    None)``): ``kernel_fn(x1, x2)`` leaves the cross block unchanged, as neural-tangents.

    Args:
        rate: keep probability in ``(0, 1]``; mode: ``"train"`` or ``"test"``.

    References:
        Srivastava et al. 2014 (dropout); Novak et al. 2020 (``stax.Dropout``).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0], [1.0, 0.0]]), None, False, False)
        >>> Dropout(0.5).kernel(k).nngp.tolist()
        [[2.0, 0.5], [0.5, 1.0]]
    """

    name = "Dropout"
    per_block = True  # linear per channel: after a concat, acts on each block

    def __init__(self, rate, mode="train"):
        if mode not in ("train", "test"):
            raise InvalidArgumentError(f"Dropout: mode must be 'train' or 'test', got {mode!r}")
        if not 0 < float(rate) <= 1:
            raise InvalidArgumentError(f"Dropout: rate is the keep probability, in (0, 1]; got "
                                       f"{rate!r}")
        self.rate, self.mode = float(rate), mode

    def apply(self, params, x, rng=None, **kwargs):
        if self.mode == "test" or self.rate == 1.0:
            return x
        if rng is None:
            raise InvalidArgumentError("Dropout: apply_fn in train mode needs rng=<PRNGKey> "
                                       "(the dropout mask)")
        keep = jax.random.bernoulli(rng, self.rate, x.shape)
        return jnp.where(keep, x / self.rate, jnp.zeros((), x.dtype))

    def kernel(self, k: Kernel) -> Kernel:
        if self.mode == "test":
            return k
        f, s, full = 1.0 / self.rate, k.spatial, k.full
        same = k.cov is None
        nngp = _scale_diagonal(k.nngp, f, 2, s, full, True) if same else k.nngp
        ntk = map_optional(lambda t: _scale_diagonal(t, f, 2, s, full, True), k.ntk) \
            if same else k.ntk
        cov = map_optional(lambda c: _scale_diagonal(c, f, 1, s, full, False), k.cov)
        return k.replace(nngp=nngp, ntk=ntk, cov=cov)
