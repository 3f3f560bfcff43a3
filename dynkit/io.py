"""Atomic file writing: a file is either absent, the old version, or the complete new version.

Everything dynkit writes (checkpoints, CSV, JSON, PNG) goes through ``atomic_write`` or
``atomic_path``: the content is written to a temporary file in the destination's directory
(same file system), flushed to disk, then moved over the destination with ``os.replace``, which
POSIX and Windows guarantee to be atomic. If writing fails part-way (an exception, a full disk,
Ctrl-C) the temporary file is removed and an existing destination is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dynkit.errors import InvalidArgumentError

__all__ = [
    "atomic_path", "atomic_write",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    r"""Yield a temporary path next to ``path`` (same suffix); on success move it onto ``path``.

    For writers that want a file name rather than a file object
    (``fig.savefig(tmp)``, ``df.to_csv(tmp)``). The parent directory is created if missing. The
    new file gets the usual permissions (``0o666`` minus the umask), not the ``0o600`` of a bare
    temporary file. On an exception the temporary file is removed and ``path`` is untouched.

    Args:
        path: the destination.

    Returns:
        A context manager yielding the temporary ``Path``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "table.csv") as tmp:
        ...     _ = tmp.write_text("a,b\n1,2\n")
        >>> (folder / "table.csv").read_text()
        'a,b\n1,2\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    encoding: str | None = None,
    newline: str | None = None,
) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success replace ``path`` with it.

    The data is flushed and ``fsync``-ed before the rename, so after a crash the destination
    holds either its previous content or the complete new content, never a partial file.

    Args:
        path: the destination.
        mode: ``"wb"`` (default) or ``"w"`` (text).
        encoding: text encoding (default UTF-8 for ``"w"``).
        newline: as in ``open``.

    Returns:
        A context manager yielding the open file.

    Raises:
        InvalidArgumentError: a mode other than ``"w"`` or ``"wb"``.

    Example:
        >>> import json, tempfile
        >>> target = Path(tempfile.mkdtemp()) / "config.json"
        >>> with atomic_write(target, "w") as f:
        ...     json.dump({"lr": 0.1}, f)
        >>> json.loads(target.read_text())
        {'lr': 0.1}
    """
    if mode not in ("w", "wb"):
        raise InvalidArgumentError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
