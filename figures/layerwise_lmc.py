"""``layerwise-lmc``: interpolate one layer at a time between two trained networks, the rest
fixed at network A, before and after alignment (Adilova, Andriushchenko, Kamp, Fischer &
Jaggi 2024, "Layer-wise linear mode connectivity")."""

from __future__ import annotations

import pandas as pd

import dynkit as dk
from dynkit.analyses import lmc
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """Layer × α loss table for a 4-layer MLP on digits, naive and weight-matched."""
    digits = dk.data.load("digits", seed=0)
    width = 64 if quick else 512
    model = dk.models.mlp(64, [width] * 3, 10)
    train = {"optimizer": "momentum", "lr": 0.05, "epochs": 5 if quick else 40, "batch_size": 64}
    pa, pb = (fit(model, digits, seed=s, **train).params for s in (0, 1))
    aligned = lmc.apply_permutation(model, pb, lmc.weight_matching(model, pa, pb))
    frames = [lmc.layerwise_interpolate(model, pa, p, digits.x_train, digits.y_train,
                                        alphas=6 if quick else 21).assign(alignment=name)
              for name, p in (("naive", pb), ("weight matching", aligned))]
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2, figsize=(9.0, 3.0))
        vmax = float((df["loss"] - df.groupby(["alignment", "layer"])["loss"]
                      .transform("first")).max())
        for ax, (alignment, g) in zip(axes[0], df.groupby("alignment", sort=False)):
            grid = g.pivot_table(index="layer", columns="alpha", values="loss", sort=False)
            delta = grid.to_numpy() - grid.to_numpy()[:, :1]
            im = ax.imshow(delta, aspect="auto", cmap="magma", vmin=0, vmax=max(vmax, 1e-12),
                           extent=(0, 1, len(grid) - 0.5, -0.5))
            ax.set_yticks(range(len(grid)), grid.index)
            ax.set_xlabel("α (one layer interpolated)")
            ax.set_title(alignment)
            ax.grid(False)
        fig.colorbar(im, ax=axes[0].tolist(), label="Δ train loss")
    return fig


def _claim_check(df):
    delta = df["loss"] - df.groupby(["alignment", "layer"])["loss"].transform("first")
    worst = delta.groupby(df["alignment"]).max()
    return ({"worst layer barrier naive": worst["naive"],
             "worst layer barrier aligned": worst["weight matching"]},
            {"alignment lowers the worst layer-wise barrier":
             worst["weight matching"] < worst["naive"]})


claim = Claim("after weight matching the worst single-layer interpolation barrier is lower than"
              " naive (Adilova et al. 2024)", _claim_check)

make = PaperFigure("layerwise-lmc", "layer × α loss heatmap, naive vs aligned "
                                    "(Adilova et al. 2024)",
                   draw_from(data, plot), claim)
