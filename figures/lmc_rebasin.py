"""``lmc-rebasin``: loss barrier between two independently trained networks, naive vs after
Git Re-Basin weight matching, as width grows (Ainsworth, Hayase & Srinivasa 2023, Fig. 2/5)."""

from __future__ import annotations

import pandas as pd

import dynkit as dk
from dynkit.analyses import lmc
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["claim", "data", "make", "plot"]


def _barriers(model, data, seeds, train_kwargs, label):
    pa, pb = (fit(model, data, seed=s, progress=False, **train_kwargs).params for s in seeds)
    aligned = lmc.apply_permutation(model, pb, lmc.weight_matching(model, pa, pb))
    curve = pd.concat([lmc.interpolate(model, pa, p, data.x_train, data.y_train, 11,
                                       x_test=data.x_test, y_test=data.y_test)
                       .assign(alignment=alignment)
                       for alignment, p in (("naive", pb), ("weight matching", aligned))])
    table = lmc.barrier_table(curve, by="alignment")
    table.insert(0, "family", label)
    return table.to_dict("records")


def data(quick: bool = False) -> pd.DataFrame:
    """Barriers for MLPs of growing width on digits (and ResNet-20 of growing width multiplier
    on 8×8 digits images in full mode)."""
    digits = dk.data.load("digits", seed=0)
    widths = (16, 128) if quick else (16, 32, 64, 128, 256, 512, 1024)
    train = {"optimizer": "momentum", "lr": 0.05, "epochs": 4 if quick else 30, "batch_size": 64}
    rows = []
    for w in widths:
        model = dk.models.mlp(64, [w, w], 10)
        rows += [dict(r, width=w) for r in _barriers(model, digits, (0, 1), train, "MLP")]
    if not quick:
        images = dk.data.load("digits", seed=0, image=True)
        for k in (1, 2, 4):  # width multiplier: 16k channels in the first stage
            model = dk.models.build({"arch": "resnet20", "input_shape": [8, 8, 1],
                                     "num_classes": 10, "width": 16 * k})
            rows += [dict(r, width=16 * k) for r in
                     _barriers(model, images, (0, 1), dict(train, epochs=15), "ResNet-20")]
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame):
    families = list(dict.fromkeys(df["family"]))
    with style():
        fig, axes = new_figure(1, len(families))
        for ax, fam in zip(axes[0], families):
            sub = df[(df["family"] == fam) & (df["split"] == "train")]
            for alignment, g in sub.groupby("alignment"):
                ax.plot(g["width"], g["loss_barrier"], marker="o", label=alignment)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("width")
            ax.set_ylabel("train loss barrier")
            ax.set_title(fam)
            ax.legend()
        fig.tight_layout()
    return fig


def _rebasin_check(df: pd.DataFrame):
    train = df[df["split"] == "train"]
    measured, checks = {}, {}
    for fam, g in train.groupby("family", sort=False):
        t = g.pivot_table(index="width", columns="alignment", values="loss_barrier")
        ratio = t["weight matching"] / t["naive"]
        for w, r in ratio.items():
            measured[f"{fam}@{w} aligned/naive"] = float(r)
        top = t.index.max()
        measured[f"{fam}@{top} naive"] = float(t.loc[top, "naive"])
        measured[f"{fam}@{top} aligned"] = float(t.loc[top, "weight matching"])
        checks[f"{fam}: aligned < 0.5 x naive at every width"] = bool((ratio < 0.5).all())
    return measured, checks


#: Ainsworth et al. 2023: weight matching removes most of the barrier (quick: MLPs on digits)
claim = Claim("weight matching lowers the train-loss barrier below 0.5 x naive at every width "
              "(Ainsworth et al. 2023)", _rebasin_check)

make = PaperFigure("lmc-rebasin", "loss barrier naive vs weight-matched as width grows "
                                  "(Ainsworth et al. 2023)",
                   draw_from(data, plot), claim)
