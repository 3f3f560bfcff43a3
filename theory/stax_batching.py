"""Tile-by-tile evaluation of big infinite-width kernels (``stax.batch``).

Memory is bounded by one tile (``batch_size x batch_size`` entries of every intermediate
covariance, per device in flight) plus the output, which is kept in host numpy arrays.
Tiles are dispatched asynchronously, round-robin over ``jax.local_devices()`` (every GPU when
present), with a ``tqdm.auto`` progress bar. With ``x2=None`` the kernel is symmetric: only
the tiles on and above the diagonal are computed and the others are mirrored.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.validation import check_finite

__all__ = ["batch", "symmetric_blocks", "symmetric_tiles", "transpose_axes"]

#: ``kernel_fn(x, None)`` splits ``x`` into blocks of at least this many rows (see
#: :func:`symmetric_tiles`); smaller blocks would spend more on their self-covariances than
#: the mirrored tiles save.
MIN_SYMMETRIC_BLOCK = 32
MAX_SYMMETRIC_BLOCKS = 8


def _pad_rows(x, size: int, xp=np):
    """Pad to ``size`` rows by repeating the last row (keeps one compiled tile shape and
    avoids zero inputs, whose zero variance has no angle); ``xp`` is numpy or jax.numpy."""
    if x.shape[0] == size:
        return x
    return xp.concatenate([x, xp.repeat(x[-1:], size - x.shape[0], axis=0)])


def batch(kernel_fn, batch_size: int, devices=None, progress: bool = True, store=None,
          client=None, scheduler=None, spec=None, verify: bool = True, timeout: float = 10.0):
    """Wrap ``kernel_fn`` so that ``batched(x1, x2=None, get=("nngp", "ntk"))`` computes the
    kernel in ``batch_size x batch_size`` tiles and returns host numpy arrays.

    With ``store`` (a local path or fsspec URL) each tile is written as one chunk of a Zarr
    store instead, resumably, and ``batched`` returns lazy
    :class:`~dynkit.theory.kernel_store_read.StoredKernel` handles (a namedtuple of them, or
    one for a single ``get`` name): the kernel is never held in memory
    (:mod:`dynkit.theory.kernel_tiles`). ``client`` (a ``dask.distributed.Client``) or
    ``scheduler`` (``"tcp://host:8786"``) runs the tiles as Dask tasks whose workers write the
    chunks (:mod:`dynkit.theory.kernel_tiles_dask`); both need ``store``.

    ``get`` as for ``kernel_fn`` (a name -> one array; a tuple or ``None`` -> a namedtuple
    of arrays; ``None`` means ``("nngp", "ntk")``). ``devices`` defaults to
    ``jax.local_devices()``. The result equals the unbatched kernel up to rounding (every
    entry comes from the same recursion on the same pair of inputs; the tests hold it to 1e-12).

    Args:
        kernel_fn: a ``kernel_fn`` of :mod:`dynkit.theory.stax`.
        batch_size: rows of x1 (and of x2) per tile, >= 1.
        devices: the devices the tiles go to, round-robin (default ``jax.local_devices()``).
        progress: show a ``tqdm`` progress bar.
        store: a Zarr store path/URL to write the kernel into (resuming what it holds).
        client: a ``dask.distributed.Client`` to run tiles on (needs ``store``).
        scheduler: a Dask scheduler address to connect to instead of ``client``.
        spec: the network's JSON spec, recorded in the store and checked on resume.
        verify: on resume, re-read complete tiles and recompute any that fail their checksum.
        timeout: seconds to wait for ``scheduler``.

    Returns:
        ``batched(x1, x2=None, get=None)``.

    References:
        Novak et al. 2020, "Neural Tangents" (``stax.batch``).

    Example:
        >>> import numpy as np
        >>> from dynkit.theory import stax
        >>> kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))[2]
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
        >>> big = batch(kernel_fn, 2, progress=False)(x, None, "ntk")
        >>> type(big).__name__, bool(np.allclose(big, kernel_fn(x, None, "ntk")))
        ('ndarray', True)
    """
    if int(batch_size) < 1:
        raise InvalidArgumentError(f"batch: batch_size must be a positive integer, got "
                                   f"{batch_size!r}")
    bs = int(batch_size)
    devices = list(devices) if devices is not None else jax.local_devices()
    if store is None and (client is not None or scheduler is not None):
        raise InvalidArgumentError("batch: client=/scheduler= need store=... (a path or URL "
                                   "the workers can write the tiles to)")

    def batched(x1, x2=None, get=None):
        names = ("nngp", "ntk") if get is None else ((get,) if isinstance(get, str)
                                                      else tuple(get))
        if store is not None:
            from dynkit.theory.kernel_tiles import compute_to_store

            ks = compute_to_store(functools.partial(_tile, kernel_fn, names), names, x1, x2,
                                  store, bs, spec=spec, devices=devices, client=client,
                                  scheduler=scheduler, progress=progress, verify=verify,
                                  timeout=timeout)
            return getattr(ks, names[0]) if isinstance(get, str) else ks
        x1 = np.asarray(x1)
        symmetric = x2 is None
        x2 = x1 if symmetric else np.asarray(x2)
        if x1.ndim < 2 or x2.shape[1:] != x1.shape[1:]:
            raise ShapeMismatchError(f"batch: x1 and x2 must be (N, ...) arrays with equal "
                                     f"per-sample shapes, got {x1.shape} and {x2.shape}")
        for name, x in (("x1", x1), ("x2", x2)):
            check_finite(f"batch: {name}", x)
        tile = jax.jit(functools.partial(_tile, kernel_fn, names))
        self_tile = jax.jit(lambda a: _tile(kernel_fn, names, a, None))
        n1, n2 = x1.shape[0], x2.shape[0]
        b1, b2 = min(bs, n1), min(bs, n2)
        shapes = jax.eval_shape(tile, x1[:b1], x2[:b2])
        outs = [np.empty((n1, n2) + s.shape[2:], s.dtype) for s in shapes]
        jobs = [(i, j) for i in range(0, n1, b1) for j in range(0, n2, b2)
                if not symmetric or j >= i]
        pending = collections.deque()
        bar = tqdm(total=len(jobs), desc="kernel tiles", disable=not progress)

        def collect():
            (i, j), res = pending.popleft()
            m, n = min(b1, n1 - i), min(b2, n2 - j)
            for out, r in zip(outs, res):
                block = np.asarray(r)[:m, :n]
                out[i:i + m, j:j + n] = block
                if symmetric and i != j:
                    out[j:j + n, i:i + m] = np.transpose(block, transpose_axes(block.ndim))
            bar.update(1)

        for t, (i, j) in enumerate(jobs):
            dev = devices[t % len(devices)]
            a = jax.device_put(_pad_rows(x1[i:i + b1], b1), dev)
            if symmetric and i == j:  # the x2=None path: exact diagonal, as kernel_fn(x)
                pending.append(((i, j), self_tile(a)))
            else:
                b = jax.device_put(_pad_rows(x2[j:j + b2], b2), dev)
                pending.append(((i, j), tile(a, b)))
            while len(pending) >= 2 * len(devices):
                collect()
        while pending:
            collect()
        bar.close()
        if isinstance(get, str):
            return outs[0]
        return collections.namedtuple("Kernels", names)(*outs)

    return batched


def symmetric_blocks(n: int) -> int:
    """How many row blocks :func:`symmetric_tiles` uses for ``n`` inputs (1: no tiling).

    Args:
        n: the number of inputs.

    Returns:
        ``clip(n // 32, 1, 8)``.

    Example:
        >>> symmetric_blocks(10), symmetric_blocks(100), symmetric_blocks(10_000)
        (1, 3, 8)
    """
    return max(1, min(MAX_SYMMETRIC_BLOCKS, n // MIN_SYMMETRIC_BLOCK))


def transpose_axes(ndim: int) -> tuple:
    """Axis permutation taking a kernel tile ``K(a, b)``, laid out ``(Na, Nb, S0, S0', S1, S1',
    ...)`` (neural-tangents' layout), to ``K(b, a)``: batch axes and each spatial pair swapped.

    Args:
        ndim: the tile's number of axes (2 plus twice the spatial dims).

    Returns:
        The permutation, a tuple.

    Example:
        >>> transpose_axes(6)
        (1, 0, 3, 2, 5, 4)
    """
    return (1, 0) + tuple(a for i in range(2, ndim, 2) for a in (i + 1, i))


def symmetric_tiles(kernel, x, n_blocks: int):
    """``K(x, x)`` from its tiles on and above the block diagonal (traceable under ``jit``).

    ``kernel(a, b)`` returns a pytree of arrays ``(len(a), len(b), ...)`` (``b=None``: a
    with itself). A kernel of one input set is symmetric, ``K[i, j] = mirror(K[j, i])``, so
    with ``n_blocks`` row blocks only ``n_blocks (n_blocks + 1) / 2`` of the ``n_blocks²``
    tiles are computed (≈ 56% of the work for 8 blocks, plus each off-diagonal tile's
    self-covariances); ``transpose_axes`` mirrors a tile. Rows are padded to equal blocks by
    repeating the last input; tiles run one after the other (``lax.map``), so the working set
    is one tile's.

    Args:
        kernel: ``kernel(a, b)`` as above.
        x: the inputs ``(N, ...)``.
        n_blocks: the number of row blocks.

    Returns:
        The pytree of ``K(x, x)``, each leaf ``(N, N, ...)``.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(5.0)[:, None]
        >>> gram = lambda a, b: a @ (a if b is None else b).T
        >>> bool(jnp.array_equal(symmetric_tiles(gram, x, 2), x @ x.T))
        True
    """
    n = x.shape[0]
    size = -(-n // n_blocks)
    blocks = _pad_rows(x, n_blocks * size, jnp).reshape((n_blocks, size) + x.shape[1:])
    iu, ju = np.triu_indices(n_blocks, 1)
    diag = jax.lax.map(lambda a: kernel(a, None), blocks)
    off = jax.lax.map(lambda ab: kernel(*ab), (blocks[iu], blocks[ju]))
    rng = np.arange(n_blocks)

    def assemble(d, o):
        full = jnp.zeros((n_blocks, n_blocks) + d.shape[1:], d.dtype)
        perm = (0,) + tuple(a + 1 for a in transpose_axes(o.ndim - 1))
        full = full.at[rng, rng].set(d).at[iu, ju].set(o)
        full = full.at[ju, iu].set(jnp.transpose(o, perm))
        full = jnp.moveaxis(full, 2, 1).reshape((n_blocks * size,) * 2 + d.shape[3:])
        return full[:n, :n]

    return jax.tree.map(assemble, diag, off)


def _tile(kernel_fn, names, a, b):
    res = kernel_fn(a, b, names)
    return tuple(getattr(res, g) for g in names)
