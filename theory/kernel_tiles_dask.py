"""Kernel tiles as Dask tasks on a ``dask.distributed`` cluster.

One task per missing tile. The inputs and the tile function are scattered to every worker
once; each task pads its tile's rows, computes it on one of the worker's local JAX devices
(chosen by the tile's index, so a worker with several GPUs and as many threads uses them all),
writes its chunks straight into the shared store (a shared filesystem or an fsspec URL) and
then its completion mark. The driver only waits on futures. Tasks are idempotent, so when a
worker dies Dask reruns its tiles elsewhere (``retries``). Start a cluster with the standard
``dask scheduler`` / ``dask worker tcp://HOST:8786`` commands; nothing here is home-made.
"""

from __future__ import annotations

import jax
import numpy as np

from dynkit.cluster import SchedulerUnreachableError, connect
from dynkit.errors import require
from dynkit.theory import kernel_store
from dynkit.theory.kernel_tiles import compiled, tile_inputs

__all__ = ["SchedulerUnreachableError", "connect", "run"]

#: Compiled tile functions on this worker, by the scattered tile function's id.
_COMPILED: dict = {}


def run(tile_fn, layout, x1, x2, todo, sizes, bar, *, client=None, scheduler=None,
        timeout: float = 10.0, retries: int = 3, compile_tile: bool = True) -> None:
    """Compute the tiles ``todo`` of ``layout`` as Dask tasks; return when all are written.

    Args:
        tile_fn: the (picklable) tile function; layout: the store's layout.
        x1, x2: the inputs (``x2=None``: symmetric); todo: the tiles ``(bi, bj)``.
        sizes: the padded tile sizes ``(b1, b2)``; bar: a tqdm bar, updated per tile.
        client: a ``dask.distributed.Client``; scheduler: an address to connect to instead.
        timeout: seconds to wait for ``scheduler``; retries: reruns of a failed task.
        compile_tile: ``jax.jit`` the tile function on the workers.
    """
    distributed = require("distributed", "scale", "a Dask scheduler (client=/scheduler=)")
    own = client is None
    if own:
        client = connect(scheduler, timeout)
    try:
        if not todo:
            return
        fn_f, x1_f = client.scatter([tile_fn, x1], broadcast=True)
        x2_f = None if x2 is None else client.scatter(x2, broadcast=True)
        futures = [client.submit(_worker_tile, fn_f, layout.path, layout.meta, x1_f, x2_f,
                                 bi, bj, sizes, compile_tile, retries=retries, pure=False)
                   for bi, bj in todo]
        for fut in distributed.as_completed(futures):
            fut.result()
            bar.update(1)
    finally:
        if own:
            client.close()


def _worker_tile(tile_fn, path, meta, x1, x2, bi, bj, sizes, compile_tile):
    """On a worker: compute tile ``(bi, bj)`` and write it (chunks, then completion mark)."""
    key = id(tile_fn)
    if key not in _COMPILED:
        _COMPILED[key] = (tile_fn, *compiled(tile_fn, compile_tile))
    _, pair, self_pair = _COMPILED[key]
    layout = kernel_store.KernelLayout(path, meta)
    b1, b2 = sizes
    devices = jax.local_devices()
    dev = devices[(bi * 7919 + bj) % len(devices)]
    a, b = tile_inputs(x1, x2, bi, bj, b1, b2, layout.tile)
    res = self_pair(jax.device_put(a, dev)) if b is None else pair(jax.device_put(a, dev),
                                                                   jax.device_put(b, dev))
    m = min(b1, layout.n1 - bi * layout.tile)
    n = min(b2, layout.n2 - bj * layout.tile)
    kernel_store.write_tile(layout, bi, bj, [np.asarray(r)[:m, :n] for r in res])
    return bi, bj
