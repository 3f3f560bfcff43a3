"""Block-structured kernels: the exact infinite-width kernel after a channel concatenation.

After ``FanInConcat`` the channels of different inputs have different covariances. A
channel-weighted mean of the kernels is the right kernel for a *linear* readout, but a
nonlinearity acts channel by channel, so its dual must be applied to each block's kernel and
the results averaged afterwards (``E[φ(u) φ(v)]`` is not linear in the covariance).
:class:`BlockKernel` therefore keeps one :class:`~dynkit.theory.stax_kernel.Kernel` per block
of channels. The limit taken: every block's width ``C_i -> ∞`` with the fractions
``C_i / sum_j C_j`` fixed (the fractions are those of the finite layer widths).

How layers treat a block-structured input (:func:`block_kernel`):

* layers with ``per_block = True`` (every elementwise activation, ``Identity``, windowed and
  global pooling, ``Flatten``, ``ImageResize``, ``NearestUpsample``, ``Dropout``) act on each
  block: they act on each channel alone;
* ``LayerNorm`` divides every block by the variance over *all* channels,
  ``q̄ = sum_i f_i q_i`` (``f_i = C_i / C``), the exact channel statistic;
* every other layer (``Dense``, ``Conv``, any layer mixing channels) sees
  :func:`merge_blocks` of the input: ``K = sum_i f_i K_i`` (same for ``Θ``), exact before a
  linear layer because its output channel is a sum over all input channels;
* ``FanInSum`` of block kernels (:func:`sum_kernels`) adds, on each common channel interval of
  its inputs, the kernels of the blocks that cover it: branches are independent Gaussian
  processes, as for plain kernels (today's residual rule, unchanged for plain kernels);
* ``FanInConcat`` (:func:`concat_kernels`) lists the blocks of its inputs side by side.

A network's output kernel is the merged one (the channel-averaged covariance of its output).
``FanOut`` copies a block kernel unchanged. As everywhere in ``stax``, a nonlinearity's dual is
exact when its input channels are Gaussian (pre-activations: outputs of ``Dense``/``Conv``,
or linear maps of them); a concatenation of such blocks then feeds it exactly.

References:
    Huang et al. 2017, "Densely connected convolutional networks" (concatenation);
    Lee et al. 2018 (NNGP); Jacot et al. 2018 (NTK); Novak et al. 2020 (``stax``).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax

from dynkit.theory.stax_kernel import Kernel, coerce
from dynkit.theory.stax_pointwise import LayerNorm, variances

__all__ = ["BlockKernel", "block_kernel", "coerce_kernels", "concat_kernels", "merge_blocks",
           "sum_kernels"]


@dataclasses.dataclass(frozen=True)
class BlockKernel:
    """The kernel of a concatenation: one :class:`~dynkit.theory.stax_kernel.Kernel` per
    block of channels (a pytree). Block ``i`` has ``blocks[i].shape1[-1]`` channels, all
    with the covariance ``blocks[i]``; :func:`merge_blocks` gives the channel-averaged kernel.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k1 = input_kernel(jnp.array([[2.0]]), None, False, False)
        >>> k3 = input_kernel(jnp.array([[1.0, 1.0, 1.0]]), None, False, False)
        >>> bk = BlockKernel((k1, k3))
        >>> bk.chans, bk.shape1
        ((1, 3), (4,))
    """

    blocks: tuple

    @property
    def chans(self) -> tuple:
        return tuple(b.shape1[-1] for b in self.blocks)

    @property
    def shape1(self) -> tuple:
        return tuple(self.blocks[0].shape1[:-1]) + (sum(self.chans),)

    def map(self, fn) -> BlockKernel:
        """``fn`` applied to every block."""
        return BlockKernel(tuple(fn(b) for b in self.blocks))


jax.tree_util.register_dataclass(BlockKernel, data_fields=["blocks"], meta_fields=[])


def _as_blocks(k) -> tuple:
    return k.blocks if isinstance(k, BlockKernel) else (k,)


def _common_full(blocks):
    return coerce(list(blocks), all(b.full for b in blocks))


def coerce_kernels(ks, full: bool):
    """:func:`~dynkit.theory.stax_kernel.coerce` that also opens block kernels.

    Args:
        ks: a kernel, a :class:`BlockKernel` or a list of them.
        full: whether the consumer needs the spatial off-diagonal pairs.

    Returns:
        ``ks`` with every (block) kernel in diagonal form unless ``full``.

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.ones((1, 3, 2)), None, True, False)
        >>> [b.full for b in coerce_kernels(concat_kernels([k, k]), False).blocks]
        [False, False]
    """
    if isinstance(ks, (list, tuple)):
        return [coerce_kernels(k, full) for k in ks]
    if isinstance(ks, BlockKernel):
        return ks.map(lambda b: coerce(b, full))
    return coerce(ks, full)


def merge_blocks(k):
    """Channel-fraction weighted mean of the blocks: ``K = sum_i (C_i / C) K_i`` (same for
    ``Θ`` and the self-covariances). Exact as the input of a layer that mixes channels
    linearly (``Dense``, ``Conv``), and the covariance of the concatenated output itself.

    Args:
        k: a :class:`BlockKernel` or a plain :class:`~dynkit.theory.stax_kernel.Kernel`
            (returned as is).

    Returns:
        A plain :class:`~dynkit.theory.stax_kernel.Kernel` with ``C = sum_i C_i`` channels;
        spatial off-diagonal pairs are kept only if every block has them.

    References:
        Novak et al. 2020 (``stax.FanInConcat``: the merged kernel).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k1 = input_kernel(jnp.array([[2.0]]), None, False, False)          # 4, 1 channel
        >>> k3 = input_kernel(jnp.array([[1.0, 1.0, 1.0]]), None, False, False)  # 1, 3 channels
        >>> merge_blocks(BlockKernel((k1, k3))).nngp.tolist()                  # (4 + 3) / 4
        [[1.75]]
    """
    if not isinstance(k, BlockKernel):
        return k
    blocks = _common_full(k.blocks)
    chans = k.chans
    total = sum(chans)

    def mix(name):
        if getattr(blocks[0], name) is None:
            return None
        return sum(c * getattr(b, name) for c, b in zip(chans, blocks)) / total

    return blocks[0].replace(nngp=mix("nngp"), ntk=mix("ntk"), cov=mix("cov"),
                             shape1=k.shape1)


def concat_kernels(ks) -> BlockKernel:
    """The block kernel of a channel concatenation: the blocks of the inputs, in order.

    Args:
        ks: the input kernels (plain or block-structured), one per concatenated input.

    Returns:
        A :class:`BlockKernel` (nothing is averaged: see :func:`merge_blocks`).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> k = input_kernel(jnp.array([[1.0, 1.0]]), None, False, False)
        >>> concat_kernels([k, concat_kernels([k, k])]).chans
        (2, 2, 2)
    """
    return BlockKernel(tuple(itertools.chain.from_iterable(_as_blocks(k) for k in ks)))


def _slice(b: Kernel, width: int) -> Kernel:
    return b.replace(shape1=tuple(b.shape1[:-1]) + (width,))


def sum_kernels(ks):
    """Kernel of a sum of independent branches: ``K' = sum_i K_i`` (same for ``Θ``).

    For block kernels the channel axis is cut at every block boundary of every input; on each
    resulting interval the output kernel is the sum of the kernels of the blocks covering it
    (each output channel is a sum of independent input channels). Plain kernels give today's
    plain sum.

    Args:
        ks: the kernels of the summed inputs (equal shapes).

    Returns:
        A plain kernel when every input is plain, else a :class:`BlockKernel`.

    References:
        Novak et al. 2020 (``stax.FanInSum``); He et al. 2016 (residual networks).

    Example:
        >>> import jax.numpy as jnp
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> a = input_kernel(jnp.array([[1.0, 1.0]]), None, False, False)         # 1
        >>> b = input_kernel(jnp.array([[2.0, 2.0]]), None, False, False)         # 4
        >>> s = sum_kernels([concat_kernels([a, b]), input_kernel(jnp.ones((1, 4)), None,
        ...                                                           False, False)])
        >>> [blk.nngp.tolist() for blk in s.blocks], s.chans                   # 1 + 1, 4 + 1
        ([[[2.0]], [[5.0]]], (2, 2))
    """
    blocked = [_as_blocks(k) for k in ks]
    full = all(b.full for bs in blocked for b in bs)
    blocked = [coerce(list(bs), full) for bs in blocked]

    def add(parts):
        out = {}
        for name in ("nngp", "ntk", "cov"):
            vals = [getattr(p, name) for p in parts]
            out[name] = None if vals[0] is None else sum(vals[1:], vals[0])
        return parts[0].replace(**out)

    if all(len(bs) == 1 for bs in blocked):
        return add([bs[0] for bs in blocked])
    edges = sorted({e for bs in blocked for e in itertools.accumulate(b.shape1[-1] for b in bs)})
    starts = [list(itertools.accumulate([0] + [b.shape1[-1] for b in bs]))[:-1]
              for bs in blocked]
    out, lo = [], 0
    for hi in edges:
        parts = []
        for bs, st in zip(blocked, starts):
            i = max(j for j, s in enumerate(st) if s <= lo)
            parts.append(bs[i])
        out.append(_slice(add(parts), hi - lo))
        lo = hi
    return BlockKernel(tuple(out))


def block_kernel(layer, k):
    """Run one primitive layer on a block-structured kernel (see the module docstring).

    ``layer.per_block`` true: the layer's kernel map on each block; ``LayerNorm``: each block
    divided by the all-channel variances; any other layer: ``layer.kernel(merge_blocks(k))``.

    Args:
        layer: a primitive :class:`~dynkit.theory.stax_kernel.Layer`.
        k: a :class:`BlockKernel`.

    Returns:
        The output kernel (a :class:`BlockKernel` for per-block layers).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from dynkit.theory import dual_activations as duals
        >>> from dynkit.theory.stax_kernel import input_kernel
        >>> from dynkit.theory.stax_pointwise import Elementwise
        >>> k = concat_kernels([input_kernel(jnp.array([[1.0], [-1.0]]), None, False, False)] * 2)
        >>> relu = Elementwise("Relu", jax.nn.relu, duals.relu_dual)
        >>> [b.nngp.tolist() for b in block_kernel(relu, k).blocks][0]    # per block
        [[0.5, 0.0], [0.0, 0.5]]
    """
    if getattr(layer, "per_block", False):
        return k.map(layer.kernel)
    if isinstance(layer, LayerNorm):
        var = variances(merge_blocks(k))
        return k.map(lambda b: layer.kernel(b, var))
    return layer.kernel(merge_blocks(k))
