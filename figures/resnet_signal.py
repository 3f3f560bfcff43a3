"""``resnet-signal-propagation``: signal propagation plots (Brock, De & Smith 2021, Fig. 1) of
a ResNet-20 at init: with BatchNorm, without normalization, and without normalization but
with ``1/sqrt(L)`` branches (Depth-μP) or ReZero gates (Bachlechner et al. 2021).

Per residual block: average channel squared mean, average channel variance and residual-branch
variance (:func:`dynkit.analyses.scaling.signal_propagation`) on a batch of Gaussian images.
Without normalization the variance doubles per block (He init: ``q_{l+1} = q_l (1 + 1)``);
BatchNorm makes it grow linearly within a stage and reset at the transitions; ``1/sqrt(L)``
keeps it within ``e`` of its start; ReZero leaves the stream unchanged at init.
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.analyses.scaling import signal_propagation
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.models import cifar_resnet

__all__ = ["VARIANTS", "claim", "data", "make", "plot"]

#: name -> cifar_resnet keyword arguments
VARIANTS = {
    "BatchNorm": {},
    "no norm": {"norm": "none"},
    "no norm, 1/sqrt(L)": {"norm": "none", "branch_scale": "depth"},
    "no norm, ReZero": {"norm": "none", "rezero": True},
}


def data(quick: bool = False) -> pd.DataFrame:
    """Tidy ``variant, block, index, mean_sq, var, residual_var, correlation, grad_norm``."""
    size, batch = (8, 8) if quick else (32, 64)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (batch, size, size, 3)))
    frames = []
    for name, kw in tqdm(VARIANTS.items(), desc="resnet-signal-propagation", unit="variant"):
        model = cifar_resnet(20, 10, input_shape=(size, size, 3), **kw)
        params = model.init(jax.random.PRNGKey(0))
        frames.append(signal_propagation(model, params, x).assign(variant=name))
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    """Three panels against the block index: channel mean², channel variance, residual
    variance (log scale), one line per variant."""
    stats = [("mean_sq", "avg. channel squared mean"), ("var", "avg. channel variance"),
             ("residual_var", "residual-branch variance")]
    with style():
        fig, axes = new_figure(1, 3, figsize=(11.0, 3.2))
        for ax, (col, label) in zip(axes[0], stats):
            for i, (name, g) in enumerate(df.groupby("variant", sort=False)):
                ax.plot(g["index"], np.maximum(g[col], 1e-12), marker=".", label=name,
                        color=f"C{i}")
            ax.set_yscale("log")
            ax.set_xlabel("residual block")
            ax.set_title(label)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
    return fig


def _claim_check(df):
    v = {name: g.sort_values("index") for name, g in df.groupby("variant")}
    plain = v["no norm"]["var"].to_numpy()
    scaled = v["no norm, 1/sqrt(L)"]["var"].to_numpy()
    bn = v["BatchNorm"]
    bn_var = bn["var"].to_numpy()
    measured = {"no norm: last / first variance": plain[-1] / plain[0],
                "1/sqrt(L): max / min variance": scaled.max() / scaled.min(),
                "ReZero: max residual variance": v["no norm, ReZero"]["residual_var"].max(),
                "BN: max |residual variance - 1|": (bn["residual_var"] - 1).abs().max()}
    checks = {"no norm: variance grows > 10x over the blocks (~2^L; less at 8x8, padding)":
              plain[-1] > 10 * plain[0],
              "1/sqrt(L) branches: variance stays within a factor e": scaled.max() / scaled.min()
              < np.e,
              "ReZero: residual branches are zero at init":
              (v["no norm, ReZero"]["residual_var"] == 0).all(),
              "BN: residual-branch variance 1 (1e-3)": measured["BN: max |residual variance - 1|"]
              < 1e-3,
              "BN: variance grows within each of the 3 stages":
              all(np.all(np.diff(bn_var[3 * s:3 * s + 3]) > 0) for s in range(3))}
    return measured, checks


claim = Claim("ResNet-20 at init: variance explodes without normalization, stays bounded with "
              "1/sqrt(L) branches or ReZero, grows linearly per stage with BN (Brock et al. 2021)",
              _claim_check)

make = PaperFigure("resnet-signal-propagation", "signal propagation plots of ResNet-20 at init: "
                   "BN vs no norm vs 1/sqrt(L) vs ReZero (Brock et al. 2021)",
                   draw_from(data, plot), claim)
