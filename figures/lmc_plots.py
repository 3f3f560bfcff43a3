"""Plots for mode connectivity: interpolation curves and the layer-wise heatmap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dynkit.figures.common import new_figure, style

__all__ = ["plot_interpolation", "plot_layerwise_heatmap"]


def plot_interpolation(curves: pd.DataFrame, metric: str = "loss"):
    """``metric`` vs α, one line per (``alignment``, ``split``) present in ``curves``."""
    with style():
        fig, axes = new_figure(1, 1)
        ax = axes[0, 0]
        keys = [k for k in ("alignment", "split") if k in curves]
        for key, g in curves.groupby(keys):
            key = key if isinstance(key, tuple) else (key,)
            ls = "--" if "test" in key else "-"
            ax.plot(g["alpha"], g[metric], ls, marker="o", label=" / ".join(map(str, key)))
        ax.set_xlabel("α  (θ = (1 − α) θ_A + α θ_B)")
        ax.set_ylabel(metric)
        ax.legend()
        fig.tight_layout()
    return fig


def plot_layerwise_heatmap(table: pd.DataFrame, metric: str = "loss"):
    """Layer × α heatmap of ``metric`` minus its value at α = 0 (Adilova et al. 2024)."""
    grid = table.pivot_table(index="layer", columns="alpha", values=metric, sort=False)
    delta = grid.to_numpy() - grid.to_numpy()[:, :1]
    with style():
        fig, axes = new_figure(1, 1, figsize=(5.0, 0.3 * len(grid) + 1.6))
        ax = axes[0, 0]
        im = ax.imshow(delta, aspect="auto", cmap="magma",
                       extent=(grid.columns.min(), grid.columns.max(), len(grid) - 0.5, -0.5))
        ax.set_yticks(np.arange(len(grid)), grid.index)
        ax.set_xlabel("α (this layer only)")
        ax.grid(False)
        fig.colorbar(im, ax=ax, label=f"Δ {metric}")
        fig.tight_layout()
    return fig
