"""``depth-mup-transfer``: training loss vs log2 lr for residual MLPs of growing depth under
muP, with residual branches multiplied by 1 and by ``1/sqrt(L)`` (Depth-muP). The optimal
rate is stable across depth only with the branch scaling (Bordelon et al. 2023, "Depthwise
hyperparameter transfer in residual networks", Fig. 1; Yang et al. 2023, "Tensor Programs VI").

Residual MLPs ``h <- h + s W relu(h)`` of width 64 (``dynkit.models.residual_mlp``) on sklearn
digits, SGD with the per-layer muP / Depth-muP rates (``dynkit.models.lr_multipliers``),
batch 64, 50 steps, a half-octave grid of rates. Quick: depths 2-8, rates 2^-4..2^2, 2 seeds;
full: depths 2-32, rates 2^-8..2^3, 3 seeds. Claim: the spread (max - min over depths) of
the optimal log2 lr is at most 1 with ``1/sqrt(L)`` branches and larger without."""

from __future__ import annotations

import pandas as pd

import dynkit as dk
from dynkit.analyses.scaling_transfer import lr_transfer
from dynkit.figures.common import PaperFigure, draw_from
from dynkit.figures.mup_transfer import plot_transfer, transfer_claim

__all__ = ["claim", "data", "make", "plot"]

BRANCHES = {"muP, branch 1": "none", "muP, branch 1/sqrt(L)": "depth"}


def data(quick: bool = False) -> pd.DataFrame:
    """Final training loss per (branches, depth, lr, seed): ``lr_transfer`` rows plus a
    ``branches`` column."""
    digits = dk.data.load("digits", seed=0)
    depths = [2, 4, 8] if quick else [2, 4, 8, 16, 32]
    seeds = [0, 1] if quick else [0, 1, 2]
    lrs = [2.0 ** (e / 2) for e in (range(-8, 5) if quick else range(-16, 7))]
    frames = []
    for label, scale in BRANCHES.items():
        df = lr_transfer(lambda L, s=scale: dk.models.residual_mlp(
                             64, 64, L, 10, parameterization="mup", branch_scale=s),
                         depths, lrs, digits, 50, seeds, axis="depth", optimizer="sgd",
                         batch_size=64, lr_multipliers=True, base_width=64.0)
        frames.append(df.assign(branches=label))
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    return plot_transfer(df, "depth", "branches")


claim = transfer_claim("with 1/sqrt(L) branches the optimal lr moves by at most one octave across "
                       "depth, with unscaled branches by more (Bordelon et al. 2023)", "depth",
                       "branches", "muP, branch 1/sqrt(L)", "muP, branch 1")

make = PaperFigure("depth-mup-transfer", "optimal lr vs depth of residual MLPs: stable only with "
                                         "1/sqrt(L) branches (Depth-muP)", draw_from(data, plot),
                   claim)
