"""``lmc-instability``: the barrier between two children spawned from one parent at step k
falls to ~0 once k passes a point early in training (Frankle, Dziugaite, Roy & Carbin 2020).

Quick mode uses a small MLP on digits, which (like LeNet on MNIST in the paper) is stable
already at initialization: its barriers are ~0 for every k. Full mode trains ResNet-20 on
8×8 digits images, the paper's setting of a network that becomes stable only after training
for a while."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import dynkit as dk
from dynkit.analyses.lmc_stability import instability
from dynkit.figures.common import new_figure, save_figure, save_table, style
from dynkit.registry import FIGURES


def data(quick: bool = False) -> pd.DataFrame:
    """Instability (SGD, lr 0.1, batch 32) of an MLP (quick) or ResNet-20 (full) on digits."""
    if quick:
        digits = dk.data.load("digits", seed=0)
        model = dk.models.mlp(64, [128, 128], 10)
        return instability(model, digits, [0, 5, 20, 60, 150, 300], 300, lr=0.1, batch_size=32,
                           alphas=6)
    images = dk.data.load("digits", seed=0, image=True)
    model = dk.models.build({"arch": "resnet20", "input_shape": [8, 8, 1], "num_classes": 10})
    ks = [0, 10, 25, 50, 100, 200, 400, 800, 1600, 3000]
    return instability(model, images, ks, 3000, lr=0.1, batch_size=32, alphas=11)


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2)
        for ax, metric in zip(axes[0], ("barrier_loss", "barrier_error")):
            for split, g in df.groupby("split"):
                ax.plot(g["k"] + 1, g[metric], marker="o", label=split)
            ax.set_xscale("log")
            ax.set_xlabel("spawn step k + 1")
            ax.set_ylabel(metric.replace("_", " "))
            ax.legend()
        fig.tight_layout()
    return fig


@FIGURES.register("lmc-instability", "barrier between children spawned at step k "
                                     "(Frankle et al. 2020)")
def make(out_dir: Path, quick: bool = False) -> list[Path]:
    df = data(quick)
    return [save_figure(plot(df), out_dir / "lmc-instability.png"),
            save_table(df, out_dir / "lmc-instability.csv")]
