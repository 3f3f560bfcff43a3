"""The empirical NTK of a finite network (a checkpoint) tiled into a Zarr store, resumably,
in-process or on a Dask cluster: the store, completion record and scheduling of
:mod:`dynkit.theory.kernel_tiles`, with ``Θ(a, b) = J(a) J(b)ᵀ`` (Jacot et al. 2018) of
:func:`dynkit.theory.empirical.ntk_fn` as the tile function."""

from __future__ import annotations

import functools

from dynkit.theory import empirical
from dynkit.theory.kernel_tiles import compute_to_store

__all__ = ["checkpoint_ntk_to_store", "ntk_to_store"]


def _tile(kernel, params, a, b):
    return (kernel(a, b, params),)


def ntk_to_store(apply_fn, params, x1, x2=None, *, store, batch_size: int, method="auto",
                 trace_axes=(-1,), client=None, scheduler=None, progress: bool = True,
                 verify: bool = True):
    """Write the empirical NTK ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` tile by tile into ``store``.

    With ``x2=None`` only tiles on and above the diagonal are computed (read back mirrored).
    The store's fingerprint is the kernel on a fixed probe, so it depends on ``params``:
    resuming with another checkpoint is refused.

    Args:
        apply_fn: ``f(params, x)`` or a dynkit ``Model`` (as for ``empirical.ntk_fn``).
        params: the parameters.
        x1, x2: the inputs.
        store: a local path or fsspec URL; batch_size: rows per tile.
        method, trace_axes: as for :func:`dynkit.theory.empirical.ntk_fn`.
        client, scheduler, progress, verify: as for ``stax.batch(..., store=)``.

    Returns:
        The lazy :class:`~dynkit.theory.kernel_store_read.StoredKernel` ``ntk``.

    References:
        Jacot, Gabriel & Hongler 2018, "Neural tangent kernel".

    Example:
        >>> import jax.numpy as jnp, numpy as np, tempfile, os
        >>> def f(p, x):
        ...     return jnp.tanh(x @ p["w"]) @ p["v"]
        >>> p = {"w": jnp.ones((2, 3)) / 2, "v": jnp.ones((3, 1))}
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
        >>> k = ntk_to_store(f, p, x, store=os.path.join(tempfile.mkdtemp(), "e.zarr"),
        ...                  batch_size=2, progress=False)
        >>> bool(np.allclose(np.asarray(k), empirical.ntk_fn(f)(x, None, p), atol=1e-6))
        True
    """
    kernel = empirical.ntk_fn(apply_fn, method=method, trace_axes=trace_axes)
    tile_fn = functools.partial(_tile, kernel, params)
    return compute_to_store(tile_fn, ("ntk",), x1, x2, store, batch_size, client=client,
                            scheduler=scheduler, progress=progress, verify=verify,
                            compile_tile=False).ntk


def checkpoint_ntk_to_store(checkpoint, x1, x2=None, **kwargs):
    """:func:`ntk_to_store` of a checkpoint (a path ``dk.load_checkpoint`` reads, or a loaded
    checkpoint with ``.model`` and ``.params``).

    Args:
        checkpoint: the checkpoint.
        x1, x2: the inputs.
        **kwargs: ``store``, ``batch_size`` and the options of :func:`ntk_to_store`.

    Returns:
        The lazy stored ``ntk``.
    """
    if isinstance(checkpoint, str) or hasattr(checkpoint, "__fspath__"):
        from dynkit.checkpoints import load_checkpoint

        checkpoint = load_checkpoint(checkpoint)
    return ntk_to_store(checkpoint.model, checkpoint.params, x1, x2, **kwargs)
