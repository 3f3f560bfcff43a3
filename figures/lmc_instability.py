"""``lmc-instability``: the barrier between two children spawned from one parent at step k
falls to ~0 once k passes a point early in training (Frankle, Dziugaite, Roy & Carbin 2020).

Quick mode trains a ResNet-8 (first stage 8 channels) on 8×8 digits images with SGD at a
high learning rate and batch 4 (lr 0.4): children spawned at initialization end in different
basins (train barrier ≈ 0.09 in loss, 3% in error), children spawned after 30 of the 600 steps
are linearly connected (barrier 0), the paper's transition in about 20 CPU seconds. (A small
MLP on digits, like LeNet on MNIST in the paper, is stable already at initialization.) Full
mode trains ResNet-20 on the same images with the same SGD noise (lr 0.4, batch 4) for 3000
steps. (At the paper's CIFAR-10 settings, lr 0.1 and batch 32, ResNet-20 on 8x8 digits is
stable already at initialization: train barrier 0.0045 at k = 0, measured 2026-12-06.) The
claim's onset is relative, as in the paper (ResNet-20 on CIFAR-10 is stable after ~3% of
training): no barrier from 5% of the training steps on (step 30 of 600 in quick mode, 150 of
3000 in full mode)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import dynkit as dk
from dynkit.analyses.lmc_stability import instability
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style

__all__ = ["claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """Instability of a ResNet-8 (quick, 600 steps) or ResNet-20 (full, 3000 steps) on 8×8
    digits images, SGD lr 0.4, batch 4; ``total_steps`` is the training length."""
    images = dk.data.load("digits", seed=0, image=True)
    if quick:
        model = dk.models.build({"arch": "cifar_resnet", "depth": 8, "width": 8,
                                 "input_shape": [8, 8, 1], "num_classes": 10})
        return instability(model, images, [0, 3, 10, 30, 100, 300], 600, lr=0.4, batch_size=4,
                           alphas=6, progress=True).assign(total_steps=600)
    model = dk.models.build({"arch": "resnet20", "input_shape": [8, 8, 1], "num_classes": 10})
    ks = [0, 10, 25, 50, 100, 150, 200, 400, 800, 1600, 3000]
    return instability(model, images, ks, 3000, lr=0.4, batch_size=4, alphas=11,
                       progress=True).assign(total_steps=3000)


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


def _claim_check(df):
    train = df[df["split"] == "train"].set_index("k")
    onset = 0.05 * df["total_steps"].iloc[0]
    late = train[train.index >= onset]
    return ({"barrier loss k=0": train.loc[0, "barrier_loss"],
             "barrier error k=0": train.loc[0, "barrier_error"],
             f"max barrier loss k>={onset:g}": late["barrier_loss"].abs().max()},
            {"barrier at init (loss > 0.02, error > 0.005)":
             train.loc[0, "barrier_loss"] > 0.02 and train.loc[0, "barrier_error"] > 0.005,
             "no barrier from 5% of training on (|loss| <= 1e-3)":
             len(late) > 0 and bool(np.all(np.abs(late["barrier_loss"]) <= 1e-3))})


claim = Claim("children spawned at init are separated by a barrier, those spawned after 5% of "
              "training are linearly connected (Frankle et al. 2020)", _claim_check)

make = PaperFigure("lmc-instability", "barrier between children spawned at step k "
                                      "(Frankle et al. 2020)",
                   draw_from(data, plot), claim)
