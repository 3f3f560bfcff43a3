"""``cka-across-seeds``: linear CKA between the same layer of two networks trained from
different seeds; it is high in the first layers and lower towards the top (Kornblith, Norouzi,
Lee & Hinton 2019, Fig. 2-3).

Quick mode trains an 8-hidden-layer MLP (width 64) on digits from several seeds and computes
CKA (full-data linear CKA on the test inputs) between every pair of seeds, layer by layer. The
table has one row per (seed pair, layer); the claim, checked on it, is that the median CKA over
pairs of the first layer exceeds that of the last hidden layer. Full mode: width 256, 10
seeds, longer training."""

from __future__ import annotations

import itertools

import pandas as pd
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.similarity import cka
from dynkit.analyses.similarity_layers import layer_activations
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """CKA of layer l of seed a vs layer l of seed b, for every pair of seeds."""
    digits = dk.data.load("digits", seed=0)
    width, seeds, epochs = (64, 3, 10) if quick else (256, 10, 40)
    model = dk.models.mlp(64, [width] * 8, 10)
    names = model.layer_names()
    acts = [layer_activations(model, fit(model, digits, optimizer="sgd", lr=0.05,
                                         batch_size=32, epochs=epochs, seed=s,
                                         progress=False).params, digits.x_test)
            for s in tqdm(range(seeds), desc="cka-across-seeds", unit="seed")]
    rows = [{"seed_a": a, "seed_b": b, "layer": name, "depth": i + 1,
             "cka": cka(acts[a][name], acts[b][name])}
            for a, b in itertools.combinations(range(seeds), 2)
            for i, name in enumerate(names)]
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure()
        ax = axes[0, 0]
        for (a, b), g in df.groupby(["seed_a", "seed_b"]):
            ax.plot(g["depth"], g["cka"], color="0.7", lw=0.8)
        med = df.groupby("depth")["cka"].median()
        ax.plot(med.index, med.to_numpy(), marker="o", color="C0", label="median over pairs")
        ax.set_xlabel("layer")
        ax.set_ylabel("linear CKA between seeds")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    med = df.groupby("depth")["cka"].median()
    return ({"median CKA first layer": med.iloc[0], "median CKA last layer": med.iloc[-1]},
            {"first-layer CKA > last-layer CKA + 0.1": med.iloc[0] > med.iloc[-1] + 0.1})


claim = Claim("CKA between two seeds is higher in the first layer than the last, by > 0.1 "
              "(Kornblith et al. 2019)", _claim_check)

make = PaperFigure("cka-across-seeds", "CKA between two seeds, layer by layer: high early, "
                                       "lower at the top (Kornblith et al. 2019)",
                   draw_from(data, plot), claim)
