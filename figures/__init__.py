"""Paper figures: one module per figure, the ``FIGURES`` registry, one matplotlib style.

Each figure module defines ``make = PaperFigure(name, help, draw)`` (``dynkit.figures.common``)
and names it in the ``dynkit.figures`` entry-point group of ``pyproject.toml``; other installed
distributions add figures the same way. ``make(name, out_dir, quick)`` draws a figure and
writes ``<name>.png`` and ``<name>.csv``.
"""

from __future__ import annotations

from pathlib import Path

from dynkit.errors import InvalidArgumentError
from dynkit.figures.claims import resolve_size
from dynkit.registry import FIGURES

__all__ = ["load_figures", "make"]


def load_figures() -> list[str]:
    """Names of every registered figure (loads the ``dynkit.figures`` entry points once).

    Example:
        >>> from dynkit import figures
        >>> "edge-of-chaos" in figures.load_figures()
        True
    """
    return FIGURES.names()


def make(name: str, out_dir: str | Path = "figures-out", quick: bool = False,
         size: str | None = None) -> list[Path]:
    """Draw the named figure and write ``<name>.png`` and ``<name>.csv`` under ``out_dir``.

    Args:
        name: a registered figure (``load_figures()``).
        out_dir: the output folder (created if needed).
        quick: the CPU-minute version of the experiment.
        size: ``"quick"``, ``"full"`` (<= 30 min on 2 CPU cores) or ``"paper"`` (the paper's
            scale, for a GPU; only figures that have one); overrides ``quick``.

    Returns:
        The written paths, PNG first, then CSV.
    """
    size = resolve_size(quick, size)
    figure = FIGURES.get(name).func
    sizes = getattr(figure, "sizes", ("quick", "full"))  # a plugin's plain draw function
    if size not in sizes:
        raise InvalidArgumentError(
            f"figure {name!r} has no size {size!r}; it runs at {', '.join(sizes)}")
    out = Path(out_dir)
    return figure(out, size=size) if size == "paper" else figure(out, size == "quick")
