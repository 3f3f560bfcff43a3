"""``dropout-stability``: keeping k of N hidden units (rescaled by N/k) costs less loss as the
width N grows, and two wide networks connect through a piecewise-linear path of low loss
(Shevchenko & Mondelli 2020)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.lmc_stability import dropout_path, dropout_stability
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """Δloss vs kept fraction for two-layer nets of several widths on digits, and the path
    between the two widest networks (rows with ``kind == "path"``)."""
    digits = dk.data.load("digits", seed=0)
    widths = (32, 256) if quick else (32, 64, 128, 256, 512, 1024, 2048)
    train = {"optimizer": "momentum", "lr": 0.05, "epochs": 4 if quick else 30, "batch_size": 64}
    frames = []
    for n in tqdm(widths, desc="dropout-stability", unit="width"):
        model = dk.models.mlp(64, [n], 10)
        pa, pb = (fit(model, digits, seed=s, progress=False, **train).params for s in (0, 1))
        ks = sorted({max(1, round(f * n)) for f in (0.125, 0.25, 0.5, 0.75, 1.0)})
        frames.append(dropout_stability(model, pa, digits.x_train, digits.y_train, "act0", ks,
                                        draws=3 if quick else 10).assign(kind="dropout"))
    path = dropout_path(model, pa, pb, digits.x_train, digits.y_train, points=6 if quick else 21)
    frames.append(path.assign(kind="path", N=widths[-1]))
    df = pd.concat(frames, ignore_index=True)
    df["keep_fraction"] = df["k"] / df["N"]
    return df


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2)
        ax = axes[0, 0]
        drop = df[df["kind"] == "dropout"]
        for n, g in drop.groupby("N"):
            ax.plot(g["keep_fraction"], g["delta_loss"], marker="o", label=f"N = {n}")
        ax.set_xlabel("kept fraction k / N")
        ax.set_ylabel("Δ train loss")
        ax.legend()
        ax = axes[0, 1]
        path = df[df["kind"] == "path"].sort_values(["segment", "t"])
        ax.plot(np.arange(len(path)), path["loss"], marker=".")
        ax.set_xlabel("position along the piecewise-linear path")
        ax.set_ylabel("train loss")
        ax.set_title(f"path between two N = {int(path['N'].iloc[0])} networks")
        fig.tight_layout()
    return fig


def _claim_check(df):
    drop = df[df["kind"] == "dropout"]
    path_ok = True
    for _, g in drop.groupby("N"):
        d = g.sort_values("k")["delta_loss"].to_numpy()
        path_ok &= bool(np.all(np.diff(d) <= 1e-9) and abs(d[-1]) <= 1e-6)
    quarter = drop[np.isclose(drop["keep_fraction"], 0.25)].sort_values("N")["delta_loss"]
    return ({"delta loss at k=N/4, smallest N": quarter.iloc[0],
             "delta loss at k=N/4, largest N": quarter.iloc[-1]},
            {"delta loss falls with k to 0 at k=N": path_ok,
             "keeping a quarter costs less at larger N": quarter.iloc[-1] < quarter.iloc[0]})


claim = Claim("the loss change of keeping k of N units falls with k and with width N "
              "(Shevchenko & Mondelli 2020)", _claim_check)

make = PaperFigure("dropout-stability", "Δloss of keeping k of N units, and the dropout path "
                                        "(Shevchenko & Mondelli 2020)",
                   draw_from(data, plot), claim)
