"""``cka-block-structure``: layer x layer linear CKA of ResNets of increasing width; wider
networks show the "block structure", many consecutive layers with nearly the same
representation (Nguyen, Raghu & Kornblith 2021, Fig. 1-2).

Quick mode trains CIFAR-style ResNet-14s (first stage 2, 4, 8 channels) on 8x8 digits images
(momentum SGD, 4 epochs) and computes minibatch CKA (Nguyen et al.'s estimator, batches of
128) between the six block outputs on the test images. The table has one row per (width,
layer_a, layer_b); the claim, checked on it, is that the block-structure contrast, the mean
off-diagonal CKA, grows with width (Nguyen et al.: wide networks relative to the data set's
size). Full mode: widths 4 to 64, 20 epochs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.similarity_layers import layer_similarity
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["block_contrast", "claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """Minibatch CKA between every pair of block outputs, per width."""
    images = dk.data.load("digits", seed=0, image=True)
    widths, epochs = ((2, 4, 8), 4) if quick else ((4, 8, 16, 32, 64), 20)
    rows = []
    for width in tqdm(widths, desc="cka-block-structure", unit="width"):
        model = dk.models.build({"arch": "cifar_resnet", "depth": 14, "width": width,
                                 "input_shape": [8, 8, 1], "num_classes": 10})
        res = fit(model, images, optimizer="momentum", lr=0.05, batch_size=64, epochs=epochs,
                  seed=0, progress=False)
        S = layer_similarity(model, res.params, x=images.x_test, batch_size=128)
        rows += [{"width": width, "layer_a": a, "layer_b": b, "i": i, "j": j,
                  "cka": float(S.iloc[i, j])}
                 for i, a in enumerate(S.index) for j, b in enumerate(S.columns)]
    return pd.DataFrame(rows)


def block_contrast(df: pd.DataFrame) -> pd.Series:
    """Mean off-diagonal CKA per width: how much of the network shares one representation."""
    return df[df["i"] != df["j"]].groupby("width")["cka"].mean()


def plot(df: pd.DataFrame):
    widths = sorted(df["width"].unique())
    with style():
        fig, axes = new_figure(1, len(widths), figsize=(3.0 * len(widths), 3.0))
        for ax, width in zip(axes[0], widths):
            g = df[df["width"] == width]
            grid = g.pivot_table(index="i", columns="j", values="cka")
            im = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="magma", origin="lower")
            ax.set_title(f"width {width}: contrast {block_contrast(g).iloc[0]:.2f}")
            ax.set_xlabel("layer")
            ax.set_ylabel("layer")
            ax.set_xticks(np.arange(len(grid)))
            ax.set_yticks(np.arange(len(grid)))
            ax.grid(False)
        fig.colorbar(im, ax=axes[0].tolist(), label="minibatch linear CKA")
    return fig


def _claim_check(df):
    contrast = block_contrast(df).sort_index()
    return ({f"contrast width {w}": c for w, c in contrast.items()},
            {"block contrast grows with width": bool(np.all(np.diff(contrast.to_numpy()) > 0))})


claim = Claim("the mean off-diagonal layer x layer CKA (block structure) grows with width "
              "(Nguyen et al. 2021)", _claim_check)

make = PaperFigure("cka-block-structure", "layer x layer CKA of ResNets of growing width: "
                                          "block structure (Nguyen et al. 2021)",
                   draw_from(data, plot), claim)
