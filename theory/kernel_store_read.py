"""Lazy reading of a stored kernel: :class:`StoredKernel` reads only the tiles a slice
touches, mirroring a tile below the diagonal of a symmetric kernel from its stored twin
(``K[j, i] = transpose(K[i, j])``), so the missing lower triangle is invisible."""

from __future__ import annotations

import collections

import numpy as np

from dynkit.errors import InvalidArgumentError
from dynkit.theory.kernel_store import KernelLayout, open_layout
from dynkit.theory.stax_batching import transpose_axes

__all__ = ["StoredKernel", "open_kernels"]


class StoredKernel:
    """One kernel (``nngp``, ``ntk``, ...) of a store, read lazily.

    ``k[r0:r1, c0:c1]`` (integers or unit-step slices on the two batch axes) returns a
    numpy array read tile by tile; ``np.asarray(k)`` reads everything; :meth:`to_dask` gives a
    ``dask.array`` with one block per tile; :meth:`rows` streams row blocks.

    Attributes:
        layout: the store's :class:`~dynkit.theory.kernel_store.KernelLayout`.
        name: which kernel.
        tiles_computed: how many tiles the call that returned this handle computed
            (0 when opened from disk or resumed with nothing missing).
    """

    def __init__(self, layout: KernelLayout, name: str, tiles_computed: int = 0):
        if name not in layout.names:
            raise InvalidArgumentError(f"kernel store {layout.path} has {layout.names}, not "
                                       f"{name!r}")
        self.layout, self.name = layout, name
        self.tiles_computed = tiles_computed
        self._arr = layout.array(name)
        self.shape = tuple(self._arr.shape)
        self.dtype = np.dtype(self._arr.dtype)
        self.ndim = len(self.shape)
        self.offset = (0, 0)

    def __repr__(self):
        return (f"StoredKernel({self.layout.path!r}, {self.name!r}, shape={self.shape}, "
                f"offset={self.offset}, tile={self.layout.tile}, "
                f"symmetric={self.symmetric})")

    @property
    def symmetric(self) -> bool:
        """Whether this (window of the) kernel is ``K(x, x)``: stored with ``x2=None`` and
        a window on the diagonal."""
        return (self.layout.symmetric and self.offset[0] == self.offset[1]
                and self.shape[0] == self.shape[1])

    def window(self, r0: int, r1: int, c0: int, c1: int) -> StoredKernel:
        """The lazy sub-kernel ``K[r0:r1, c0:c1]`` (e.g. train-train and test-train blocks of
        one kernel over train and test inputs), read on demand like the whole."""
        if not (0 <= r0 <= r1 <= self.shape[0] and 0 <= c0 <= c1 <= self.shape[1]):
            raise InvalidArgumentError(f"window [{r0}:{r1}, {c0}:{c1}] is outside the kernel's "
                                       f"shape {self.shape[:2]}")
        view = object.__new__(StoredKernel)
        view.__dict__.update(self.__dict__)
        view.offset = (self.offset[0] + r0, self.offset[1] + c0)
        view.shape = (r1 - r0, c1 - c0) + self.shape[2:]
        return view

    def __array__(self, dtype=None, copy=None):
        out = self.read(0, self.shape[0], 0, self.shape[1])
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (2 - len(key))
        bounds, squeeze = [], []
        for ax, k in enumerate(key[:2]):
            n = self.shape[ax]
            if isinstance(k, (int, np.integer)):
                k = int(k) + n if k < 0 else int(k)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} out of range for axis {ax} of size {n}")
                bounds.append((k, k + 1))
                squeeze.append(ax)
            elif isinstance(k, slice) and k.step in (None, 1):
                start, stop, _ = k.indices(n)
                bounds.append((start, max(start, stop)))
            else:
                raise InvalidArgumentError(f"StoredKernel: index the two batch axes with "
                                           f"integers or unit-step slices, got {k!r}")
        out = self.read(*bounds[0], *bounds[1])
        out = out[(slice(None),) * 2 + tuple(key[2:])]
        return np.squeeze(out, axis=tuple(squeeze)) if squeeze else out

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1`` and columns ``c0:c1``, assembled from the tiles they touch."""
        t = self.layout.tile
        out = np.empty((r1 - r0, c1 - c0) + self.shape[2:], self.dtype)
        r0, r1 = r0 + self.offset[0], r1 + self.offset[0]
        c0, c1 = c0 + self.offset[1], c1 + self.offset[1]
        for bi in range(r0 // t, -(-r1 // t)):  # per tile row: one read above, one mirrored
            i0, i1 = max(r0, bi * t), min(r1, (bi + 1) * t)
            split = min(max(c0, bi * t), c1) if self.layout.symmetric else c0
            if split > c0:  # columns of tiles left of the diagonal: stored as their mirror
                block = self._arr[c0:split, i0:i1]
                out[i0 - r0:i1 - r0, :split - c0] = np.transpose(block,
                                                                 transpose_axes(block.ndim))
            if c1 > split:
                out[i0 - r0:i1 - r0, split - c0:] = self._arr[i0:i1, split:c1]
        return out

    def rows(self, block: int | None = None):
        """Yield ``(r0, K[r0:r0 + block, :])`` over all rows (default block: the tile)."""
        block = block or self.layout.tile
        for r0 in range(0, self.shape[0], block):
            yield r0, self.read(r0, min(r0 + block, self.shape[0]), 0, self.shape[1])

    def to_dask(self):
        """The kernel as a ``dask.array`` with one chunk per tile (mirrored where needed)."""
        from dynkit.errors import require

        da = require("dask.array", "scale", "StoredKernel.to_dask")
        t = self.layout.tile
        chunks = (tuple(min(t, self.shape[0] - s) for s in range(0, self.shape[0], t)),
                  tuple(min(t, self.shape[1] - s) for s in range(0, self.shape[1], t)))
        chunks += tuple((s,) for s in self.shape[2:])
        path, name, (dr, dc) = self.layout.path, self.name, self.offset

        def load(block_info=None):
            (r0, r1), (c0, c1) = block_info[None]["array-location"][:2]
            return StoredKernel(open_layout(path), name).read(r0 + dr, r1 + dr, c0 + dc, c1 + dc)

        return da.map_blocks(load, chunks=chunks, dtype=self.dtype, meta=np.empty((0,) * self.ndim,
                                                                                    self.dtype))


def open_kernels(path, tiles_computed: int = 0):
    """Every kernel of the store ``path`` as a namedtuple of :class:`StoredKernel`.

    Args:
        path: the store (local directory or fsspec URL).
        tiles_computed: recorded on each handle (see :class:`StoredKernel`).

    Returns:
        ``Kernels(nngp=..., ntk=...)`` (the names stored).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from dynkit.theory import stax
        >>> kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))[2]
        >>> x = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
        >>> path = os.path.join(tempfile.mkdtemp(), "k.zarr")
        >>> _ = stax.batch(kernel_fn, 2, store=path, progress=False)(x, None)
        >>> k = open_kernels(path)
        >>> bool(np.allclose(k.ntk[2, :], kernel_fn(x, None, "ntk")[2, :]))
        True
    """
    layout = open_layout(path)
    return collections.namedtuple("Kernels", layout.names)(
        *(StoredKernel(layout, n, tiles_computed) for n in layout.names))
