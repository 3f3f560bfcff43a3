"""Shared plumbing for figures: the style, atomic PNG/CSV writing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import pandas as pd

from dynkit.io import atomic_write

STYLE = Path(__file__).with_name("dynkit.mplstyle")


def style():
    """Context manager applying dynkit's style; wrap a ``plot_*`` function's body in it."""
    return plt.style.context(STYLE)


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(fig, axes)``; ``figsize`` defaults to 4.2 x 3.2 inches per panel. Call inside
    ``style()``."""
    kwargs.setdefault("figsize", (4.2 * ncols, 3.2 * nrows))
    kwargs.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.style.context(STYLE), atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


def save_table(df: pd.DataFrame, path: Path) -> Path:
    """Write a tidy table as CSV atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(df.to_csv(index=False).encode())
    return path
