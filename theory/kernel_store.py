"""On-disk layout of a tiled kernel in a Zarr (v3) store, and its completion record.

A store holds one kernel ``K(x1, x2)`` computed tile by tile::

    k.zarr/zarr.json      group attributes ``dynkit_kernel``: names, shape, tile, dtype,
                          symmetric, input hash, kernel fingerprint, spec (JSON or null)
    k.zarr/<name>/        one array per kernel (``nngp``, ``ntk``, ...), shape ``(N1, N2, ...)``,
                          one chunk per ``tile x tile`` tile, each chunk CRC32C-checksummed
    k.zarr/done/          the completion record, ``(T1, T2)`` uint8, one chunk per tile

A tile counts as done only when its ``done`` chunk is 1, and that chunk is written only
after every kernel chunk of the tile has been fully written. Completion is this record, never
inferred from the values: a tile whose kernel is legitimately NaN is done once marked, and a
crash between the chunk write and the mark leaves the tile not done, so it is recomputed. A
chunk truncated or altered after the fact fails its checksum when read
(:func:`verified_done`), so it is recomputed too. With ``x2=None`` (symmetric) only the tiles
on and above the diagonal are ever written.

The path is anything Zarr opens: a local directory or an fsspec URL (``s3://bucket/k.zarr``).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from dynkit.errors import InvalidArgumentError, require

__all__ = ["KernelLayout", "create_or_resume", "input_hash", "mark_done", "open_layout",
           "verified_done", "write_tile"]

ATTR = "dynkit_kernel"
FORMAT_VERSION = 1


def _zarr():
    return require("zarr", "scale", "a kernel store (store=...)")


def input_hash(x1, x2) -> str:
    """SHA-256 of the inputs (shape, dtype and bytes of ``x1``, then of ``x2`` or ``None``).

    Args:
        x1, x2: the kernel's inputs (``x2=None``: symmetric).

    Returns:
        The hex digest.

    Example:
        >>> import numpy as np
        >>> input_hash(np.zeros((2, 3)), None) == input_hash(np.zeros((2, 3)), None)
        True
    """
    h = hashlib.sha256()
    for x in (x1, x2):
        if x is None:
            h.update(b"none")
            continue
        x = np.ascontiguousarray(x)
        h.update(repr((x.shape, x.dtype.str)).encode())
        h.update(x.tobytes())
    return h.hexdigest()


class KernelLayout:
    """The metadata of a kernel store and where its tiles go.

    Attributes:
        path: the store's path or URL.
        meta: the ``dynkit_kernel`` attributes (names, shape, tile, dtype, symmetric, ...).
    """

    def __init__(self, path: str, meta: dict):
        self.path = str(path)
        self.meta = meta
        self.names = tuple(meta["names"])
        self.n1, self.n2 = meta["shape"][:2]
        self.tile = int(meta["tile"])
        self.symmetric = bool(meta["symmetric"])

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles along rows and columns."""
        return -(-self.n1 // self.tile), -(-self.n2 // self.tile)

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile ``(bi, bj)`` that is stored (upper triangle with the diagonal when
        symmetric), row-major."""
        t1, t2 = self.grid
        return [(i, j) for i in range(t1) for j in range(t2) if not self.symmetric or j >= i]

    def array(self, name: str, mode: str = "r"):
        """The Zarr array of kernel ``name`` (or ``"done"``)."""
        return _zarr().open_array(store=f"{self.path}/{name}", mode=mode)


def open_layout(path) -> KernelLayout:
    """Open an existing kernel store for reading.

    Args:
        path: the store (local directory or fsspec URL).

    Returns:
        Its :class:`KernelLayout`.

    Raises:
        InvalidArgumentError: ``path`` is not a dynkit kernel store.

    Example:
        >>> try:
        ...     open_layout("/no/such/k.zarr")
        ... except InvalidArgumentError as exc:
        ...     print("is not a dynkit kernel store" in str(exc))
        True
    """
    zarr = _zarr()
    try:
        group = zarr.open_group(store=str(path), mode="r")
        meta = dict(group.attrs[ATTR])
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{path} is not a dynkit kernel store (no '{ATTR}' attributes); write one with "
            f"stax.batch(kernel_fn, batch_size, store=...) or `dynkit kernel`") from exc
    return KernelLayout(str(path), meta)


def create_or_resume(path, meta: dict) -> KernelLayout:
    """Create the store ``path`` for ``meta``, or reopen it to resume the same kernel.

    ``meta`` holds ``names``, ``shape`` (per name: ``{name: shape}`` in ``shapes``),
    ``tile``, ``dtype``, ``symmetric``, ``input_hash``, ``fingerprint`` and ``spec``. An
    existing store must match on every one of them: a store of another spec or other inputs
    is refused rather than mixed into.

    Args:
        path: the store (local directory or fsspec URL).
        meta: the metadata, JSON-serializable.

    Returns:
        The :class:`KernelLayout`.

    Raises:
        InvalidArgumentError: the store exists for another kernel, or cannot be written.
    """
    zarr = _zarr()
    from zarr.codecs import Crc32cCodec

    path = str(path)
    meta = json.loads(json.dumps(dict(meta, version=FORMAT_VERSION)))
    local = "://" not in path
    if local and os.path.exists(path) and (not os.access(path, os.W_OK)
                                           or not os.stat(path).st_mode & 0o222):
        raise InvalidArgumentError(f"kernel store {path} is read-only; pass a writable path "
                                   f"(or copy it) to compute or resume into it")
    try:
        group = zarr.open_group(store=path, mode="a")
    except (OSError, PermissionError) as exc:
        raise InvalidArgumentError(f"kernel store {path} cannot be opened for writing: "
                                   f"{exc}") from exc
    old = group.attrs.get(ATTR)
    if old is not None:
        for key in ("version", "names", "symmetric", "input_hash", "fingerprint", "spec",
                    "shapes", "tile", "dtype"):
            if old.get(key) != meta.get(key):
                raise InvalidArgumentError(
                    f"kernel store {path} holds another kernel: its {key} is "
                    f"{_short(old.get(key))}, this call's is {_short(meta.get(key))}. Resume "
                    f"only with the same spec, inputs, dtype and batch_size; write a new "
                    f"kernel to another path (or delete {path})")
        return KernelLayout(path, old)
    if len(group.members()) or group.attrs:
        raise InvalidArgumentError(f"{path} exists and is not an empty or dynkit kernel store; "
                                   f"choose another path")
    tile = int(meta["tile"])
    for name in meta["names"]:
        shape = tuple(meta["shapes"][name])
        group.create_array(name, shape=shape, chunks=(tile, tile) + shape[2:],
                           dtype=meta["dtype"][name], fill_value=np.nan,
                           compressors=[Crc32cCodec()])
    n1, n2 = meta["shape"]
    group.create_array("done", shape=(-(-n1 // tile), -(-n2 // tile)), chunks=(1, 1),
                       dtype="uint8", fill_value=0, compressors=[Crc32cCodec()])
    group.attrs[ATTR] = meta  # written last: a store without it is not yet a store
    return KernelLayout(path, meta)


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def write_tile(layout: KernelLayout, bi: int, bj: int, blocks) -> None:
    """Write tile ``(bi, bj)``: each kernel's chunk, then its completion mark.

    Args:
        layout: the store.
        bi, bj: the tile's row and column indices.
        blocks: one array per name in ``layout.names``, cut to the tile's true size.
    """
    t = layout.tile
    for name, block in zip(layout.names, blocks):
        arr = layout.array(name, "r+")
        arr[bi * t:bi * t + block.shape[0], bj * t:bj * t + block.shape[1]] = np.asarray(block)
    mark_done(layout, bi, bj)


def mark_done(layout: KernelLayout, bi: int, bj: int) -> None:
    """Set tile ``(bi, bj)``'s completion mark (after its chunks are written)."""
    layout.array("done", "r+")[bi, bj] = 1


def verified_done(layout: KernelLayout, check_chunks: bool = True) -> set:
    """The tiles whose completion mark is set and, with ``check_chunks``, whose every kernel
    chunk decodes with a valid checksum (a truncated or altered chunk fails). The values are
    not inspected: NaN entries are a legitimate result, not a sign of a missing tile.

    Args:
        layout: the store.
        check_chunks: read each done tile back to verify it (one tile in memory at a time).

    Returns:
        The set of ``(bi, bj)`` that need no recomputation.
    """
    done_arr = layout.array("done")
    try:
        marks = np.asarray(done_arr[...])
    except ValueError:  # a torn completion mark: read them one by one
        marks = np.zeros(done_arr.shape, np.uint8)
        for bi, bj in layout.tiles():
            try:
                marks[bi, bj] = done_arr[bi, bj]
            except ValueError:
                marks[bi, bj] = 0
    done = {(bi, bj) for bi, bj in layout.tiles() if marks[bi, bj] == 1}
    if not check_chunks:
        return done
    arrays = [layout.array(n) for n in layout.names]
    t = layout.tile
    good = set()
    for bi, bj in sorted(done):
        try:
            for a in arrays:
                a[bi * t:(bi + 1) * t, bj * t:(bj + 1) * t]
        except ValueError:  # checksum mismatch or a chunk of the wrong size
            continue
        good.add((bi, bj))
    return good
