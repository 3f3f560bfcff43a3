"""dynkit's own checkpoint formats: safetensors (default) and npz, plus format sniffing.

A native checkpoint stores one tensor per parameter, keyed ``"<node>.<param>"`` (node names
contain dots, parameter names do not, so the key splits on its last dot), and a JSON header

    {"format": 1, "config": model.config, "step": step, "meta": meta}

in the safetensors metadata under ``"dynkit"`` (npz: a string entry ``"__dynkit__"``), from
which ``dynkit.models.build(config)`` rebuilds the model. A model imported by
``dynkit.models.from_torch``, which no builder rebuilds, also stores its graph as JSON data
under ``"graph"`` (``dynkit.models.graph_json``), so it loads back without its PyTorch class.
Neither format can carry code: safetensors is raw bytes plus a JSON header, and npz is read
with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dynkit.errors import CheckpointError, InvalidArgumentError, ShapeMismatchError
from dynkit.io import atomic_write

__all__ = [
    "FORMAT_VERSION", "HEADER_KEY", "NPZ_HEADER_KEY", "SUFFIXES", "check_dtypes", "check_params",
    "flatten_params", "make_header", "parse_header", "peek_step", "read_npz", "read_safetensors",
    "save_checkpoint", "sniff_format", "unflatten_params", "warn_nonfinite",
]

FORMAT_VERSION = 1
HEADER_KEY = "dynkit"
NPZ_HEADER_KEY = "__dynkit__"
SUFFIXES = (".safetensors", ".npz", ".pt", ".pth")

#: Sanity bound on a safetensors JSON header (the reference implementation uses 100 MB).
_MAX_HEADER = 100_000_000


# --------------------------------------------------------------------- params <-> flat tensors
def flatten_params(params: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """``{node: {param: array}}`` -> ``{"node.param": np.ndarray}`` (C-contiguous copies).

    Example:
        >>> flatten_params({"fc0": {"w": [[1.0]], "b": [0.0]}})
        {'fc0.w': array([[1.]]), 'fc0.b': array([0.])}
    """
    return {
        f"{node}.{k}": np.ascontiguousarray(np.asarray(v))
        for node, entry in params.items()
        for k, v in entry.items()
    }


def unflatten_params(tensors: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of ``flatten_params``: split every key on its last dot.

    Example:
        >>> unflatten_params({"layer1.0.conv1.w": np.zeros(1)})
        {'layer1.0.conv1': {'w': array([0.])}}
    """
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        node, sep, name = key.rpartition(".")
        if not sep:
            raise CheckpointError(f"tensor key {key!r} is not of the form '<node>.<param>'")
        params.setdefault(node, {})[name] = value
    return params


def check_params(model, params: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Check that ``params`` has exactly the entries and shapes of ``model.param_shapes()``.

    Raises ``CheckpointError`` listing missing and unexpected entries, or
    ``ShapeMismatchError`` naming the tensor, the shape found and the shape expected."""
    expected = model.param_shapes()
    want = {f"{n}.{k}" for n, e in expected.items() for k in e}
    have = {f"{n}.{k}" for n, e in params.items() for k in e}
    _report_key_mismatch(sorted(want - have), sorted(have - want), model, source)
    for node, entry in expected.items():
        for k, shape in entry.items():
            found = tuple(np.shape(params[node][k]))
            if found != tuple(shape):
                raise ShapeMismatchError(
                    f"{source}: tensor '{node}.{k}' has shape {found}, but model "
                    f"{model.arch!r} expects {tuple(shape)}"
                )


def _report_key_mismatch(missing, unexpected, model, source: str) -> None:
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    raise CheckpointError(
        f"{source}: tensors do not match model {model.arch!r}: " + "; ".join(parts)
    )


def _is_numeric(v) -> bool:
    return isinstance(v, np.ndarray) and (v.dtype.kind in "biuf" or v.dtype.name == "bfloat16")


def check_dtypes(tensors: Mapping[str, Any], source: str) -> None:
    """``CheckpointError`` naming entries that are not numeric arrays (raw bytes of a
    non-npy zip member, strings, void records)."""
    odd = [f"{k} ({getattr(v, 'dtype', type(v).__name__)})"
           for k, v in tensors.items() if not _is_numeric(v)]
    if odd:
        raise CheckpointError(f"{source}: entries that are not numeric arrays: {odd[:10]}")


def warn_nonfinite(tensors: Mapping[str, np.ndarray], source: str) -> None:
    """``warnings.warn`` (RuntimeWarning) naming every floating tensor holding NaN or Inf."""
    bad = [
        k for k, v in tensors.items()
        if np.issubdtype(np.asarray(v).dtype, np.inexact) and not np.all(np.isfinite(v))
    ]
    if bad:
        warnings.warn(
            f"{source}: tensor(s) with NaN or Inf values: {bad}", RuntimeWarning, stacklevel=3
        )


# --------------------------------------------------------------------- header
def make_header(model, step, meta) -> str:
    """The JSON header string stored with a native checkpoint."""
    if step is not None and (not isinstance(step, (int, np.integer)) or isinstance(step, bool)):
        raise InvalidArgumentError(f"step must be an integer or None, got {step!r}")
    header = {
        "format": FORMAT_VERSION,
        "config": dict(model.config),
        "step": None if step is None else int(step),
        "meta": meta,
    }
    from dynkit.models.graph_json import graph_to_dict, needs_graph

    if needs_graph(model):  # from_torch: no builder rebuilds it from its config
        header["graph"] = graph_to_dict(model)
    try:
        return json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"model.config, meta (and the node attrs of a model stored with its graph) must be "
            f"JSON-serializable (plain dicts, lists, strings, "
            f"finite numbers): {exc}"
        ) from exc


def parse_header(text: str, source: str) -> dict:
    """Parse and validate a stored header; ``CheckpointError`` if it is not dynkit's."""
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{source}: the dynkit header is not valid JSON") from exc
    if not isinstance(header, dict) or not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{source}: the dynkit header has no model config")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: dynkit checkpoint format {header.get('format')!r} is not supported "
            f"(this dynkit reads format {FORMAT_VERSION}); upgrade dynkit"
        )
    return header


# --------------------------------------------------------------------- saving
def save_checkpoint(path, model, params, *, step=None, meta=None) -> Path:
    """Save ``params`` of ``model`` to ``path`` atomically; the suffix picks the format.

    ``.safetensors`` (recommended) or ``.npz``; see the module docstring for the layout.
    The parameters are checked against ``model.param_shapes()`` first. Returns the path.

    Args:
        path: the destination (``.safetensors`` or ``.npz``); parent folders are created.
        model: the ``Model`` (its config is stored).
        params: its parameters.
        step: the training step to store.
        meta: JSON-serializable user metadata.

    Returns:
        The ``Path`` written.

    Raises:
        InvalidArgumentError: an unknown suffix or non-serializable ``meta``.
        ShapeMismatchError: ``params`` do not fit ``model``.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> path = dk.save_checkpoint(f"{tempfile.mkdtemp()}/step_7.safetensors", model,
        ...                           model.init(jax.random.PRNGKey(0)), step=7, meta={"lr": 0.1})
        >>> path.suffix, dk.load_checkpoint(path).step
        ('.safetensors', 7)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".npz"):
        raise InvalidArgumentError(
            f"cannot save {str(path)!r}: the suffix must be .safetensors or .npz, got {suffix!r}"
        )
    check_params(model, params, f"save_checkpoint({str(path)!r})")
    header = make_header(model, step, meta)
    tensors = flatten_params(params)
    if suffix == ".safetensors":
        from safetensors.numpy import save

        try:
            data = save(tensors, metadata={HEADER_KEY: header})
        except Exception as exc:
            raise CheckpointError(f"cannot serialize parameters to safetensors: {exc}") from exc
        with atomic_write(path) as f:
            f.write(data)
    else:
        # e.g. bfloat16, which np.savez would store as opaque void records
        odd = {k: str(v.dtype) for k, v in tensors.items() if v.dtype.kind not in "biuf"}
        if odd:
            raise InvalidArgumentError(
                f"cannot save {str(path)!r}: npz has no portable encoding for the dtypes {odd}; "
                f"save as .safetensors (which stores bfloat16) or cast to float32"
            )
        with atomic_write(path) as f:
            np.savez(f, **tensors, **{NPZ_HEADER_KEY: np.array(header)})
    return path


# --------------------------------------------------------------------- sniffing
_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"%PDF": "a PDF document",
    b"\x89HDF": "an HDF5 file",
    b"\x1f\x8b": "a gzip archive",
    b"\x93NUMPY": "a single .npy array (use an .npz archive)",
}


def sniff_format(path: Path) -> str:
    """``"safetensors" | "npz" | "pt"`` from the file's content, not its name.

    A zip archive is ``pt`` if it holds a pickle (``*/data.pkl``, torch.save's layout) and
    ``npz`` otherwise; a raw pickle stream (protocol >= 2 starts with ``0x80``) is a legacy
    ``pt``; safetensors starts with a little-endian u64 header length then ``{``.

    Raises:
        CheckpointError: a missing file or an unknown format.

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> path = dk.save_checkpoint(f"{tempfile.mkdtemp()}/step_7.safetensors", model,
        ...                           model.init(jax.random.PRNGKey(0)), step=7, meta={"lr": 0.1})
        >>> sniff_format(path.rename(path.with_suffix(".bin")))    # the name does not matter
        'safetensors'
    """
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {str(path)!r}")
    if path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a directory; use dynkit.load_run() for a folder of checkpoints"
        )
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(
                f"{str(path)!r} is a damaged zip archive (truncated or corrupt npz/pt file)"
            ) from exc
        if any(n.endswith("data.pkl") for n in names):
            return "pt"
        return "npz"
    # safetensors first: its u64 header length can start with 0x80 like a pickle (e.g. 0x380)
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n <= _MAX_HEADER:
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pt"
    what = next((d for sig, d in _SIGNATURES.items() if head.startswith(sig)), None)
    if what is None:
        what = "empty" if size == 0 else f"of unknown format (first bytes {head[:8]!r})"
    raise CheckpointError(
        f"{str(path)!r} is not a checkpoint: the file is {what}. Expected safetensors, npz, "
        f"or a PyTorch .pt/.pth state_dict"
    )


# --------------------------------------------------------------------- reading
def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """``(tensors, header)``; ``header`` is ``None`` for a foreign (non-dynkit) file."""
    from safetensors import safe_open

    size = path.stat().st_size
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    if 8 + n > size:
        raise CheckpointError(
            f"{str(path)!r} is truncated: its 8-byte prefix announces a {n}-byte safetensors "
            f"header, so prefix and header alone need {8 + n} bytes, but the file has only "
            f"{size} bytes"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file (truncated or corrupt): {exc}"
        ) from exc
    header = metadata.get(HEADER_KEY)
    return tensors, (None if header is None else parse_header(header, str(path)))


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """``(tensors, header)`` of an npz archive, read with ``allow_pickle=False``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(
                f"{str(path)!r} holds pickled Python objects; refused (dynkit never unpickles "
                f"npz entries, since unpickling can run code)"
            ) from exc
        raise CheckpointError(f"{str(path)!r} is not a readable npz archive: {exc}") from exc
    except Exception as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable npz archive (truncated or corrupt): {exc}"
        ) from exc
    header = arrays.pop(NPZ_HEADER_KEY, None)
    if header is not None:
        header = parse_header(str(header), str(path))
    return arrays, header


def peek_step(path: Path) -> int | None:
    """The step stored in a native checkpoint's header, reading only the header (or None).

    Example:
        >>> import tempfile, jax, dynkit as dk
        >>> model = dk.models.mlp(3, [4], 2)
        >>> path = dk.save_checkpoint(f"{tempfile.mkdtemp()}/step_7.safetensors", model,
        ...                           model.init(jax.random.PRNGKey(0)), step=7, meta={"lr": 0.1})
        >>> peek_step(path)
        7
    """
    fmt = sniff_format(path)
    try:
        if fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                text = (f.metadata() or {}).get(HEADER_KEY)
        elif fmt == "npz":
            with np.load(path, allow_pickle=False) as z:
                text = str(z[NPZ_HEADER_KEY]) if NPZ_HEADER_KEY in z.files else None
        else:
            return None
    except Exception as exc:
        raise CheckpointError(f"{str(path)!r} is unreadable (truncated or corrupt): {exc}") from exc
    if text is None:
        return None
    step = parse_header(text, str(path)).get("step")
    return step if isinstance(step, int) else None
