"""``layer-reinit``: re-initialization robustness, the test error after resetting one layer of
a trained network to its value at step τ (Zhang, Bengio & Singer 2019, Fig. 1): the first
layer is "critical" (resetting it to its initial value destroys the network), the later
hidden layers are "robust" (their reset barely changes the error).

Quick mode trains a 5-layer MLP (width 64) on digits with SGD, checkpoints along the way, and
resets each layer to several earlier checkpoints (``reinit_robustness``). The table holds the
test error per (layer, τ) with the trained baseline; the claim, checked on it, is that the
first layer's re-initialization to τ = 0 costs more error than that of any hidden layer after
it. Full mode: the same width, 5000 steps and a finer τ grid. At width 256 the first layer of
this MLP hardly moves from its initialization on the 8x8 digits (lazy), so resetting it costs
no error at all (0 vs up to 0.019 for later layers, measured 2026-12-06): the width-64 network
is the one whose first layer is critical, as in Zhang et al.'s MNIST MLPs."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

import dynkit as dk
from dynkit.analyses.reinit import reinit_robustness
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """Test error of the trained MLP with each layer reset to each checkpoint τ."""
    digits = dk.data.load("digits", seed=0)
    width, steps, every = (64, 400, 10) if quick else (64, 5000, 25)
    taus = [0, 10, 20, 50, 100, 400] if quick else [0, 25, 50, 100, 250, 500, 1000, 2500, 5000]
    model = dk.models.mlp(64, [width] * 4, 10)
    with tempfile.TemporaryDirectory() as run:
        fit(model, digits, optimizer="sgd", lr=0.05, batch_size=32, steps=steps,
            save_every=every, seed=0, out_dir=run)
        df = reinit_robustness(run, (digits.x_test, digits.y_test), to=taus)
    return df[df["metric"] == "error"].reset_index(drop=True)


def plot(df: pd.DataFrame):
    base = float(df.loc[df["layer"] == "none", "value"].iloc[0])
    grid = df[df["layer"] != "none"].pivot_table(index="layer", columns="reinit_step",
                                                 values="value", sort=False).sort_index(axis=1)
    with style():
        fig, axes = new_figure(figsize=(5.0, 3.2))
        ax = axes[0, 0]
        im = ax.imshow(grid.to_numpy() - base, aspect="auto", cmap="magma", vmin=0,
                       vmax=max(float(np.nanmax(grid.to_numpy() - base)), 1e-6))
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
        ax.set_yticks(range(grid.shape[0]), grid.index)
        ax.set_xlabel("re-initialized to step τ")
        ax.set_ylabel("layer")
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="Δ test error")
        fig.tight_layout()
    return fig


def _claim_check(df):
    base = df.loc[df["layer"] == "none", "value"].iloc[0]
    at_init = df[df["reinit_step"] == 0].set_index("layer")["value"] - base
    hidden = [name for name in at_init.index if name.startswith("fc") and name != "fc0"]
    return ({"fc0 error increase": at_init["fc0"],
             "max later hidden increase": at_init[hidden].max()},
            {"re-initializing fc0 costs more than any later hidden layer":
             at_init["fc0"] > at_init[hidden].max()})


claim = Claim("re-initializing the first layer to init costs more test error than any later "
              "hidden layer (Zhang et al. 2019)", _claim_check)

make = PaperFigure("layer-reinit", "test error after re-initializing one layer to step τ: "
                                   "critical vs robust layers (Zhang et al. 2019)",
                   draw_from(data, plot), claim)
