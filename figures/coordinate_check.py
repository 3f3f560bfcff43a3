"""``coordinate-check``: activation and update sizes vs width of a 2-hidden-layer ReLU MLP after
1..5 SGD steps under the standard (SP), NTK and μP parameterizations (Yang et al. 2022,
"Tensor Programs V", Fig. 5; Yang & Hu 2021).

Under μP every layer's update ``RMS(h_t - h_0)`` is flat in width; under SP at a fixed rate the
hidden updates grow like ``sqrt(n)`` and the output's like ``n``; under NTK the hidden updates
shrink like ``n^(-1/2)`` (lazy training). Computed by
:func:`dynkit.analyses.scaling.coordinate_check`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.analyses.scaling import coordinate_check, width_slopes
from dynkit.data import load
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.models import mlp

__all__ = ["LEARNING_RATES", "claim", "data", "make", "plot", "width_spread"]

#: SGD rate per parameterization (each stable at the smallest width)
LEARNING_RATES = {"standard": 0.005, "ntk": 0.3, "mup": 0.2}


def data(quick: bool = False) -> pd.DataFrame:
    """Tidy ``parameterization, width, step, layer, activation_size, update_size``."""
    widths = [64, 256, 1024] if quick else [64, 128, 256, 512, 1024, 2048, 4096]
    seeds = range(2 if quick else 5)
    ds = load("gaussian_mixture", n_train=64, n_test=8, num_classes=4, dim=8)
    frames = []
    for par, lr in tqdm(LEARNING_RATES.items(), desc="coordinate-check",
                        unit="parameterization"):
        check = coordinate_check(
            lambda n, par=par: mlp(8, [n, n], 4, parameterization=par, bias=False),
            widths, ds, steps=5, lr=lr, batch_size=8, loss="mse", seeds=seeds)
        frames.append(check.frame.assign(parameterization=par))
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    """One row per parameterization, one column per layer: update size vs width, one line per
    step."""
    pars, layers = list(LEARNING_RATES), list(dict.fromkeys(df["layer"]))
    with style():
        fig, axes = new_figure(len(pars), len(layers), figsize=(3.2 * len(layers),
                                                                 2.6 * len(pars)))
        for i, par in enumerate(pars):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                sub = df[(df["parameterization"] == par) & (df["layer"] == layer)]
                for step, g in sub[sub["step"] >= 1].groupby("step"):
                    ax.plot(g["width"], g["update_size"], marker=".", label=f"t={step}",
                            color=f"C{int(step) - 1}")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{par}: {layer}")
                if i == len(pars) - 1:
                    ax.set_xlabel("width")
                if j == 0:
                    ax.set_ylabel(r"RMS$(h_t - h_0)$")
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def width_spread(df: pd.DataFrame) -> pd.Series:
    """max/min over widths of the update size, per parameterization, layer and step >= 1."""
    f = df[df["step"] >= 1]
    return f.groupby(["parameterization", "layer", "step"])["update_size"].agg(
        lambda v: float(np.max(v) / np.min(v)))


def _claim_check(df):
    spread = width_spread(df)
    slopes = {p: width_slopes(g).set_index(["layer", "step"])["slope"]
              for p, g in df.groupby("parameterization")}
    sp, ntk, mup = slopes["standard"], slopes["ntk"], slopes["mup"]
    measured = {"muP max update spread over widths": spread["mup"].max(),
                "muP max |slope|": mup.abs().max(),
                "SP min slope act1": sp["act1"].min(),
                "SP slope head step 1": sp["head", 1],
                "NTK max slope act0/act1": ntk[["act0", "act1"]].max()}
    checks = {"muP: update sizes flat in width (spread < 1.3, |slope| < 0.1)":
              (spread["mup"] < 1.3).all() and (mup.abs() < 0.1).all(),
              "SP: hidden updates grow ~ sqrt(n) (slope > 0.25)": (sp["act1"] > 0.25).all(),
              "SP: output update grows ~ n at step 1 (slope > 0.8)": sp["head", 1] > 0.8,
              "NTK: hidden updates shrink ~ n^(-1/2) (slope < -0.4)":
              (ntk[["act0", "act1"]] < -0.4).all()}
    return measured, checks


claim = Claim("muP update sizes are flat in width; under SP hidden updates grow like sqrt(n) and "
              "the output's like n; under NTK they shrink like n^(-1/2) (Yang et al. 2022)",
              _claim_check)

make = PaperFigure("coordinate-check", "muP coordinate check: update sizes vs width under SP, "
                                       "NTK and muP (Yang et al. 2022)", draw_from(data, plot),
                   claim)
