"""``unet-long-skip-scaling``: a small U-Net denoiser (digits, σ = 0.5) trained with long-skip
coefficient κ = 1, 1/√2 and 0.5 (ScaleLong, Huang et al. 2023): training loss, and the
oscillation over training of the per-stage feature norms
(:func:`dynkit.analyses.scaling.skip_stability`). ScaleLong's claim: with κ < 1 the feature
norms oscillate less and training is faster. The CSV holds per-κ rows of both (``kind`` =
``loss`` / ``stage``); whether the claim shows at the quick size is read from it, not assumed.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.analyses.scaling import skip_stability
from dynkit.data import load
from dynkit.figures.claims import Claim, resolve_size
from dynkit.figures.common import PaperFigure, draw_from, new_figure, paper_from, style
from dynkit.models import unet
from dynkit.train import fit

__all__ = ["CONFIGS", "KAPPAS", "claim", "data", "make", "plot"]

#: long-skip coefficients compared
KAPPAS = (1.0, 1 / math.sqrt(2), 0.5)


#: (stages, width, steps, checkpoint every) per size; paper: the most stages 8x8 inputs allow
#: and ScaleLong's ~1e5 steps (a GPU)
CONFIGS = {"quick": (2, 8, 60, 5), "full": (2, 16, 600, 20), "paper": (3, 64, 100_000, 2_000)}


def data(quick: bool = False, size: str | None = None) -> pd.DataFrame:
    """Rows ``kind="loss"``: ``kappa, step, loss`` (training loss); ``kind="stage"``:
    ``kappa, stage, feature_oscillation, grad_oscillation``. Sizes: ``CONFIGS`` (``size``
    overrides ``quick``)."""
    stages, width, steps, every = CONFIGS[resolve_size(quick, size)]
    ds = load("denoise", seed=0)
    x, y = ds.x_train[:128], ds.y_train[:128]
    frames = []
    for kappa in tqdm(KAPPAS, desc="unet-long-skip-scaling", unit="kappa"):
        model = unet(stages, width, input_shape=(8, 8, 1), skip_scale=kappa)
        with tempfile.TemporaryDirectory() as out:
            res = fit(model, ds, optimizer="adam", lr=3e-3, steps=steps, batch_size=64,
                      loss="mse", save_every=every, out_dir=out, progress=False)
            _, summary = skip_stability(out, x, y)
        hist = res.history[res.history["split"] == "train"]
        frames.append(pd.DataFrame({"kind": "loss", "kappa": kappa, "step": hist["step"],
                                    "loss": hist["loss"]}))
        frames.append(summary.assign(kind="stage", kappa=kappa))
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    """Left: training loss vs step per κ. Right: feature-norm oscillation per stage and κ."""
    with style():
        fig, axes = new_figure(1, 2, figsize=(9.0, 3.2))
        loss, stage = df[df["kind"] == "loss"], df[df["kind"] == "stage"]
        for i, (kappa, g) in enumerate(loss.groupby("kappa", sort=False)):
            axes[0, 0].plot(g["step"], g["loss"], label=f"κ={kappa:.3g}", color=f"C{i}")
        axes[0, 0].set_yscale("log")
        axes[0, 0].set_xlabel("step")
        axes[0, 0].set_ylabel("train loss")
        axes[0, 0].legend()
        stages = list(dict.fromkeys(stage["stage"]))
        for i, (kappa, g) in enumerate(stage.groupby("kappa", sort=False)):
            pos = np.arange(len(stages)) + 0.25 * (i - 1)
            axes[0, 1].bar(pos, g.set_index("stage").loc[stages, "feature_oscillation"],
                           width=0.25, label=f"κ={kappa:.3g}", color=f"C{i}")
        axes[0, 1].set_xticks(np.arange(len(stages)), stages)
        axes[0, 1].set_ylabel("std of Δ log feature norm")
        axes[0, 1].set_title("feature-norm oscillation per stage")
        fig.tight_layout()
    return fig


def _claim_check(df):
    loss, stage = df[df["kind"] == "loss"], df[df["kind"] == "stage"]
    final = {k: g.sort_values("step")["loss"].iloc[-5:].mean() for k, g in loss.groupby("kappa")}
    osc = stage.groupby("kappa")["feature_oscillation"].mean()
    lo, hi = min(KAPPAS), max(KAPPAS)
    measured = {f"kappa={k:.3g} final loss (last 5 records)": v for k, v in final.items()}
    measured.update({f"kappa={k:.3g} mean feature oscillation": v for k, v in osc.items()})
    checks = {f"kappa={lo:g} oscillates less than kappa={hi:g}": osc[lo] < osc[hi],
              f"kappa={lo:g} trains at least as far as kappa={hi:g}": final[lo] <= final[hi]}
    return measured, checks


#: measured at full size (600 steps, width 16, 2 stages): kappa = 0.5 trains further (loss 1.53
#: vs 1.64) but oscillates more (0.187 vs 0.122). ScaleLong's U-Nets have many more long skips
#: (the effect grows with their number) and train for ~1e5 steps: size "paper".
claim = Claim("long-skip coefficient kappa < 1 damps the feature-norm oscillation and trains no "
              "slower than kappa = 1 (ScaleLong, Huang et al. 2023; needs their deep diffusion "
              "U-Nets, ~1e5 steps)", _claim_check, size="paper")

make = PaperFigure("unet-long-skip-scaling", "U-Net denoiser with long-skip coefficient kappa: "
                   "loss and feature-norm oscillation (ScaleLong, Huang et al. 2023)",
                   draw_from(data, plot), claim, paper=paper_from(data, plot))
