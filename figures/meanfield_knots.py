"""``meanfield-knots``: a wide mean-field two-layer ReLU net fitted with small L2
regularization to univariate data is piecewise linear with at most three knots between
consecutive training inputs ("Mean-field analysis of piecewise linear solutions for wide ReLU
networks", Shevchenko, Kungurtsev & Mondelli 2022).

The theorem is about small regularization, where the net still fits the data; full mode sweeps
``l2`` from 1e-4 to 3e-3 (train loss 8e-6 to 5.6e-3). At ``l2 = 1e-2`` the minimizer no longer
fits (train loss 0.043 after 20k or 60k steps, measured 2026-12-06), so it is outside the
claim."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import knots
from dynkit.theory import two_layer as tl

__all__ = ["NAME", "X_TRAIN", "Y_TRAIN", "claim", "data", "make", "plot"]

NAME = "meanfield-knots"
X_TRAIN = (-1.0, -0.6, -0.1, 0.3, 0.7, 1.0)
Y_TRAIN = (0.2, -0.3, 0.4, 0.1, -0.4, 0.3)
#: a knot is a cluster (within MERGE) of slope changes whose total exceeds TOL_REL times the
#: total variation of the slope on [-1, 1]
TOL_REL, MERGE = 0.03, 0.02


def data(quick: bool = False) -> pd.DataFrame:
    """GD in mean-field scaling (gamma = 1, bias, init_scale 1, time step 0.5) with weight
    decay ``l2``. Rows ``kind="fit"``: ``l2, x, f``; ``kind="interval"``: ``l2, left, right,
    knots``; ``kind="train"``: ``x, y``; ``kind="summary"``: ``l2, train_loss``."""
    width, steps, l2s = (200, 4000, (1e-3,)) if quick else (1000, 20000, (1e-4, 3e-4, 1e-3, 3e-3))
    x = jnp.asarray(X_TRAIN)[:, None]
    y = jnp.asarray(Y_TRAIN)
    grid = np.linspace(-1.0, 1.0, 2001)
    frames = [pd.DataFrame({"kind": "train", "x": X_TRAIN, "y": Y_TRAIN})]
    for l2 in tqdm(l2s, desc="meanfield-knots", unit="l2"):
        net = tl.TwoLayer(width=width, gamma=1.0, bias=True)
        p = tl.init(jax.random.PRNGKey(0), net, 1)
        tr = tl.gd(p, net, x, y, lr=0.5, steps=steps, record_every=steps, weight_decay=l2)
        f = np.asarray(tl.apply(tr.final, net, jnp.asarray(grid)[:, None]))
        total = np.abs(np.diff(np.diff(f) / np.diff(grid))).sum()
        kn = knots.knots_of_samples(grid, f, tol=TOL_REL * total, merge=MERGE)
        frames += [pd.DataFrame({"kind": "fit", "l2": l2, "x": grid, "f": f}),
                   knots.knots_between(kn, X_TRAIN).assign(kind="interval", l2=l2),
                   pd.DataFrame({"kind": ["knot"] * len(kn.positions), "l2": l2,
                                 "x": kn.positions, "jump": kn.jumps}),
                   pd.DataFrame({"kind": ["summary"], "l2": [l2],
                                 "train_loss": [tr.history["train_loss"].iloc[-1]]})]
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    fits = df[df["kind"] == "fit"]
    train = df[df["kind"] == "train"]
    iv = df[df["kind"] == "interval"]
    kn = df[df["kind"] == "knot"]
    with style():
        fig, axes = new_figure(1, 2)
        ax = axes[0, 0]
        for i, (l2, g) in enumerate(fits.groupby("l2")):
            ax.plot(g["x"], g["f"], color=f"C{i}", label=f"l2 = {l2:g}")
            k = kn[kn["l2"] == l2]
            ax.plot(k["x"], np.interp(k["x"], g["x"], g["f"]), "x", color=f"C{i}")
        ax.plot(train["x"], train["y"], "ko", label="data")
        ax.set_xlabel("x")
        ax.legend()
        ax = axes[0, 1]
        width = 0.8 / max(1, iv["l2"].nunique())
        for i, (l2, g) in enumerate(iv.groupby("l2")):
            ax.bar(np.arange(len(g)) + i * width, g["knots"], width, label=f"l2 = {l2:g}")
        ax.axhline(3, color="k", ls="--", lw=0.8, label="bound 3")
        ax.set_xlabel("interval between training inputs")
        ax.set_ylabel("knots")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    iv = df[df["kind"] == "interval"]
    loss = df[df["kind"] == "summary"]["train_loss"].max()
    return ({"intervals": len(iv), "max knots": iv["knots"].max(), "train loss": loss},
            {"at most 3 knots between consecutive inputs": iv["knots"].max() <= 3,
             "fits the data (train loss < 0.01)": loss < 0.01})


claim = Claim("a wide mean-field ReLU net fitting 1-D data has at most 3 knots between "
              "consecutive inputs (Shevchenko et al. 2022)", _claim_check)

make = PaperFigure(NAME, "wide mean-field ReLU regression in 1-D has at most three knots between "
                         "consecutive training inputs (Shevchenko et al. 2022)",
                   draw_from(data, plot), claim)
