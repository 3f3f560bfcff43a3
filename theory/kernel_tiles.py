"""Compute a kernel tile by tile into a Zarr store, resumably (``stax.batch(..., store=)``).

The driver plans the ``tile x tile`` tiles (with ``x2=None`` only those on and above the
diagonal), skips those the store's completion record already holds (re-reading each to
verify its checksum), and computes the rest either in-process, asynchronously round-robin
over ``jax.local_devices()``, or as Dask tasks on a ``dask.distributed`` cluster
(:mod:`dynkit.theory.kernel_tiles_dask`), whose workers write their chunks straight to the
store. The driver holds only the tiles in flight, never the kernel. Each tile is computed by
the same compiled function on the same padded inputs wherever it runs, so a resumed or
distributed kernel equals an uninterrupted in-process one.
"""

from __future__ import annotations

import collections
import hashlib

import jax
import numpy as np
from tqdm.auto import tqdm

from dynkit.errors import InvalidArgumentError, ShapeMismatchError
from dynkit.theory import kernel_store
from dynkit.theory.kernel_store_read import open_kernels
from dynkit.theory.stax_batching import _pad_rows
from dynkit.validation import check_finite

__all__ = ["compiled", "compute_to_store", "fingerprint", "tile_inputs"]


def fingerprint(tile_fn, x1, compile_tile: bool = True) -> str:
    """A hash of ``tile_fn`` on a fixed probe: two inputs drawn from ``N(0, 1)`` (seed 0) of
    ``x1``'s per-sample shape and dtype, the result rounded to 5 significant digits (so the
    same kernel on another device still matches; a different architecture or checkpoint does
    not)."""
    probe = np.random.default_rng(0).standard_normal((2,) + x1.shape[1:]).astype(x1.dtype)
    out = (jax.jit(tile_fn, static_argnums=1) if compile_tile else tile_fn)(probe, None)
    text = ";".join(" ".join(f"{v:.5e}" for v in np.asarray(o, np.float64).ravel())
                    for o in out)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tile_inputs(x1, x2, bi, bj, b1, b2, tile):
    """The padded inputs of tile ``(bi, bj)``: rows ``bi*tile`` of ``x1`` and of ``x2``
    (``None`` for a diagonal tile of a symmetric kernel, computed as ``K(a)`` exactly like
    ``kernel_fn(x)``), each padded to ``b1``/``b2`` rows by repeating its last row."""
    a = _pad_rows(x1[bi * tile:bi * tile + b1], b1)
    if x2 is None and bi == bj:
        return a, None
    xb = x1 if x2 is None else x2
    return a, _pad_rows(xb[bj * tile:bj * tile + b2], b2)


def compute_to_store(tile_fn, names, x1, x2, store, batch_size: int, *, spec=None,
                     devices=None, client=None, scheduler=None, progress: bool = True,
                     verify: bool = True, timeout: float = 10.0, compile_tile: bool = True):
    """Compute ``tile_fn`` over all tiles of ``(x1, x2)`` into the Zarr store ``store``.

    ``tile_fn(a, b)`` returns one array ``(len(a), len(b), ...)`` per name (``b=None``: ``a``
    with itself). Tiles already complete in the store are skipped; with ``verify`` each is
    read back first and recomputed if its checksum fails.

    Args:
        tile_fn: the jittable tile function (picklable when a cluster is used).
        names: the kernels' names, one per output of ``tile_fn``.
        x1, x2: the inputs (``x2=None``: symmetric, only upper tiles computed).
        store: a local path or fsspec URL.
        batch_size: rows per tile (the chunk size).
        spec: the architecture's JSON spec, recorded (and checked on resume) when given.
        devices: in-process devices (default ``jax.local_devices()``).
        client: a ``dask.distributed.Client``; scheduler: its address instead.
        progress: show a progress bar.
        verify: re-read complete tiles on resume and recompute corrupt ones.
        timeout: seconds to wait for ``scheduler``.
        compile_tile: ``jax.jit`` the tile function (``False`` for one that compiles its own
            parts and validates concrete inputs, as ``empirical.ntk_fn`` does).

    Returns:
        A namedtuple of lazy :class:`~dynkit.theory.kernel_store_read.StoredKernel`.
    """
    if int(batch_size) < 1:
        raise InvalidArgumentError(f"batch: batch_size must be a positive integer, got "
                                   f"{batch_size!r}")
    tile = int(batch_size)
    x1 = np.asarray(x1)
    sym = x2 is None
    xb = x1 if sym else np.asarray(x2)
    if x1.ndim < 2 or xb.shape[1:] != x1.shape[1:]:
        raise ShapeMismatchError(f"batch: x1 and x2 must be (N, ...) arrays with equal "
                                 f"per-sample shapes, got {x1.shape} and {xb.shape}")
    for label, x in (("x1", x1), ("x2", xb)):
        check_finite(f"batch: {label}", x)
    n1, n2 = x1.shape[0], xb.shape[0]
    b1, b2 = min(tile, n1), min(tile, n2)
    out = (jax.eval_shape(tile_fn, x1[:b1], xb[:b2]) if compile_tile
           else tile_fn(x1[:1], xb[:1]))
    meta = {"names": list(names), "shape": [n1, n2], "tile": tile, "symmetric": sym,
            "shapes": {n: [n1, n2, *o.shape[2:]] for n, o in zip(names, out)},
            "dtype": {n: np.dtype(o.dtype).str for n, o in zip(names, out)},
            "input_hash": kernel_store.input_hash(x1, None if sym else xb),
            "fingerprint": fingerprint(tile_fn, x1, compile_tile), "spec": spec}
    layout = kernel_store.create_or_resume(store, meta)
    done = kernel_store.verified_done(layout, check_chunks=verify)
    todo = [t for t in layout.tiles() if t not in done]
    x2_in = None if sym else xb
    bar = tqdm(total=len(layout.tiles()), initial=len(done), desc="kernel tiles",
               disable=not progress)
    if client is not None or scheduler is not None:
        from dynkit.theory import kernel_tiles_dask

        kernel_tiles_dask.run(tile_fn, layout, x1, x2_in, todo, (b1, b2), bar,
                              client=client, scheduler=scheduler, timeout=timeout,
                              compile_tile=compile_tile)
    else:
        _run_local(tile_fn, layout, x1, x2_in, todo, (b1, b2), bar,
                   devices if devices is not None else jax.local_devices(), compile_tile)
    bar.close()
    return open_kernels(store, tiles_computed=len(todo))


def compiled(tile_fn, compile_tile: bool = True):
    """``(pair, self_pair)``: ``tile_fn(a, b)`` and ``tile_fn(a, None)``, jitted or not."""
    def self_pair(a):
        return tile_fn(a, None)
    if not compile_tile:
        return tile_fn, self_pair
    return jax.jit(tile_fn), jax.jit(self_pair)


def _run_local(tile_fn, layout, x1, x2, todo, sizes, bar, devices, compile_tile):
    """Dispatch ``todo`` asynchronously round-robin over ``devices`` (at most two tiles in
    flight per device) and write each tile as it completes."""
    b1, b2 = sizes
    pair, self_pair = compiled(tile_fn, compile_tile)
    pending = collections.deque()

    def collect():
        (bi, bj), res = pending.popleft()
        m = min(b1, layout.n1 - bi * layout.tile)
        n = min(b2, layout.n2 - bj * layout.tile)
        kernel_store.write_tile(layout, bi, bj, [np.asarray(r)[:m, :n] for r in res])
        bar.update(1)

    for t, (bi, bj) in enumerate(todo):
        dev = devices[t % len(devices)]
        a, b = tile_inputs(x1, x2, bi, bj, b1, b2, layout.tile)
        a = jax.device_put(a, dev)
        res = self_pair(a) if b is None else pair(a, jax.device_put(b, dev))
        pending.append(((bi, bj), res))
        while len(pending) >= 2 * len(devices):
            collect()
    while pending:
        collect()
