"""Tiling and output layout of the empirical NTK (:mod:`dynkit.theory.empirical`).

``tiled`` assembles a kernel from ``bs x bs`` blocks of inputs, computing each tile's factors
once per row and only the blocks on and above the diagonal when ``x2`` is ``x1``; ``finalize``
turns the ``(N1, N2, O, O)`` kernel into the neural-tangents layout (``trace_axes`` averaged,
``diagonal_axes`` kept once).
"""

from __future__ import annotations

import math
import string
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["finalize", "tiled"]


def tiled(single, prep, pair, x1, x2, bs, traced):
    """``single(x1, x2)`` if both fit in one tile, else the kernel from ``bs x bs`` tiles:
    ``block = pair(prep(x1 tile), prep(x2 tile))``.

    ``prep`` (per-example Jacobians or layer factors) runs once per row tile and once per
    column tile of that row; a ragged last tile is padded to ``bs`` inputs and cut back. For
    ``x2 = None`` only the tiles on and above the diagonal are computed (a diagonal tile
    reuses its row's factors); those below are their transposes.

    Args:
        single: ``single(x1, x2)``, the whole kernel in one go.
        prep: ``prep(tile)``, a tile's factors; pair: ``pair(fa, fb)``, a block from factors.
        x1, x2: the inputs (``x2=None``: symmetric); bs: the tile size.
        traced: blocks are ``(n, m)`` (else ``(n, m, O, O)``, transposed accordingly).

    Returns:
        The kernel ``(N1, N2[, O, O])``.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(10.0).reshape(5, 2)
        >>> gram = lambda a, b: a @ b.T
        >>> k = tiled(lambda a, b: gram(a, a), lambda t: t, gram, x, None, 2, True)
        >>> bool(jnp.array_equal(k, x @ x.T))
        True
    """
    sym = x2 is None
    if x1.shape[0] <= bs and (sym or x2.shape[0] <= bs):
        return single(x1, x2)
    tiles1, tiles2 = _split(x1, bs), _split(x1 if sym else x2, bs)
    blocks: dict[tuple[int, int], Any] = {}
    rows = []
    for i, (xa, na) in enumerate(tiles1):
        fa = prep(xa)
        row = []
        for j, (xb, nb) in enumerate(tiles2):
            if sym and j < i:
                b = blocks[(j, i)]
                b = b.T if traced else jnp.transpose(b, (1, 0, 3, 2))
            else:
                # one tile in flight at a time: its factors are freed before the next ones
                b = jax.block_until_ready(pair(fa, fa if sym and i == j else prep(xb)))[:na, :nb]
            blocks[(i, j)] = b
            row.append(b)
        rows.append(jnp.concatenate(row, axis=1))
    return jnp.concatenate(rows, axis=0)


def _split(x, bs):
    """``(tile, true length)`` pairs of ``bs`` inputs, the last one zero-padded."""
    out = []
    for s in range(0, x.shape[0], bs):
        t = x[s:s + bs]
        n = t.shape[0]
        if n < bs:
            t = jnp.concatenate([t, jnp.zeros((bs - n, *t.shape[1:]), t.dtype)])
        out.append((t, n))
    return out


def finalize(K, traced, d, tr, dg):
    """From ``(N1, N2, O, O)`` to the neural-tangents layout: pairs zipped, ``trace_axes``
    averaged out, ``diagonal_axes`` kept once, in output-axis order.

    Args:
        K: the kernel ``(N1, N2, O, O)`` (returned as is when ``traced``).
        traced: the kernel is already ``(N1, N2)``.
        d: the per-example output shape (``O = prod(d)``).
        tr, dg: canonical ``trace_axes`` and ``diagonal_axes`` (0 is the batch axis).

    Returns:
        The kernel in the layout of neural-tangents' ``empirical_ntk_fn``.

    References:
        Novak et al. 2020, "Neural Tangents" (``trace_axes``, ``diagonal_axes``).

    Example:
        >>> import jax.numpy as jnp
        >>> K = jnp.arange(16.0).reshape(2, 2, 2, 2)
        >>> finalize(K, False, (2,), (1,), ()).tolist()                 # mean of K[..., a, a]
        [[1.5, 5.5], [9.5, 13.5]]
        >>> finalize(K, False, (2,), (), (1,)).shape                    # (N1, N2, O)
        (2, 2, 2)
    """
    if traced:
        return K
    n1, n2 = K.shape[:2]
    raw = K.reshape(n1, n2, *d, *d)
    r = 1 + len(d)
    letters = iter(string.ascii_letters)
    left = [next(letters) for _ in range(r)]
    right = [left[a] if (a in tr or a in dg) else next(letters) for a in range(r)]
    sub_in = left[0] + right[0] + "".join(left[1:]) + "".join(right[1:])
    sub_out = ""
    for a in range(r):
        if a in dg:
            sub_out += left[a]
        elif a not in tr:
            sub_out += left[a] + right[a]
    sizes = (n1, *d)
    denom = math.prod(sizes[a] for a in tr)
    return jnp.einsum(f"{sub_in}->{sub_out}", raw) / denom
