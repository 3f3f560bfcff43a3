"""``svcca-convergence``: SVCCA of each layer to its own final state against training step;
lower layers converge first (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017, Fig. 4, "bottom-up
convergence").

Quick mode trains a 4-hidden-layer MLP (width 64) on digits with SGD for 300 steps, three
seeds, a checkpoint every 20 steps, and compares each layer with the final checkpoint's on the
test inputs (``similarity_series``, SVCCA keeping 99% of the variance). The table is the tidy
series with a ``seed`` column; the claim, checked on it, is that the median over seeds of the
first step at which a layer's SVCCA reaches 0.9 increases with depth. Full mode: width 256,
five seeds, 1500 steps."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.similarity_layers import similarity_series
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["THRESHOLD", "claim", "crossing_steps", "data", "make", "plot"]

#: The SVCCA level whose first crossing marks a layer as converged.
THRESHOLD = 0.9


def data(quick: bool = False) -> pd.DataFrame:
    """SVCCA(layer at step t, same layer at the end) for every seed, layer and checkpoint."""
    digits = dk.data.load("digits", seed=0)
    width, seeds, steps = (64, 3, 300) if quick else (256, 5, 1500)
    model = dk.models.mlp(64, [width] * 4, 10)
    frames = []
    for seed in tqdm(range(seeds), desc="svcca-convergence", unit="seed"):
        with tempfile.TemporaryDirectory() as run:
            fit(model, digits, optimizer="sgd", lr=0.05, batch_size=32, steps=steps,
                save_every=20 if quick else 50, seed=seed, out_dir=run, progress=False)
            frames.append(similarity_series(run, digits.x_test, measure="svcca")
                          .assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def crossing_steps(df: pd.DataFrame, threshold: float = THRESHOLD) -> pd.Series:
    """Median over seeds of the first step with ``value >= threshold``, per layer (in depth
    order)."""
    first = (df[df["value"] >= threshold].groupby(["layer", "seed"])["step"].min()
             .groupby("layer").median())
    order = sorted(first.index, key=lambda name: int("".join(filter(str.isdigit, name)) or 0))
    return first[order]


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2, figsize=(9.0, 3.2))
        ax = axes[0, 0]
        curves = df.groupby(["layer", "step"])["value"].median().unstack("layer")
        for layer in crossing_steps(df).index:
            ax.plot(curves.index, curves[layer], marker=".", label=layer)
        ax.axhline(THRESHOLD, color="0.5", lw=0.8, ls="--")
        ax.set_xlabel("training step")
        ax.set_ylabel("SVCCA to final layer")
        ax.legend()
        steps = crossing_steps(df)
        axes[0, 1].bar(np.arange(len(steps)), steps.to_numpy())
        axes[0, 1].set_xticks(np.arange(len(steps)), steps.index)
        axes[0, 1].set_ylabel(f"median step SVCCA ≥ {THRESHOLD}")
        axes[0, 1].set_xlabel("layer (bottom → top)")
        fig.tight_layout()
    return fig


def _claim_check(df):
    steps = crossing_steps(df).to_numpy()
    return ({f"crossing step layer {k}": s for k, s in enumerate(steps)},
            {"4 layers": len(steps) == 4,
             "crossing step non-decreasing with depth, last > first":
             bool(np.all(np.diff(steps) >= 0) and steps[-1] > steps[0])})


claim = Claim("the step at which a layer's SVCCA to its final state passes 0.9 grows with depth"
              " (Raghu et al. 2017)", _claim_check)

make = PaperFigure("svcca-convergence", "SVCCA of each layer to its final state vs step: "
                                        "lower layers converge first (Raghu et al. 2017)",
                   draw_from(data, plot), claim)
