"""``early-neuron-alignment``: with a small initialization, neurons of a two-layer ReLU net
first align with the positive or the negative data according to the sign of their output
weight; then the loss decays like 1/t and W is close to rank two (Boursier, Pillaud-Vivien &
Flammarion 2022; Min, Mallada & Vidal 2023, "Early neuron alignment in two-layer ReLU
networks with small initialization")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import two_layer as tl

__all__ = ["NAME", "claim", "data", "late_slope", "make", "plot"]

NAME = "early-neuron-alignment"


def _data(d: int, n: int, key):
    """Two clusters around ``mu+ = e1`` and ``mu- = -cos(1) e1 + sin(1) e2`` (angle pi - 1):
    same-label points are positively, different-label points negatively correlated."""
    k1 = jax.random.split(key)[0]
    mu_p = jnp.zeros(d).at[0].set(1.0)
    mu_m = jnp.zeros(d).at[0].set(-np.cos(1.0)).at[1].set(np.sin(1.0))
    y = jnp.where(jnp.arange(n) < n // 2, 1.0, -1.0)
    centers = jnp.where(y[:, None] > 0, mu_p, mu_m)
    x = centers + 0.15 * jax.random.normal(k1, (n, d)) / np.sqrt(d)
    return x, y


def data(quick: bool = False) -> pd.DataFrame:
    """Logistic-loss GD, gamma = 1/2, init_scale 1e-4. Rows ``kind="history"``: ``time,
    train_loss, eff_rank, aligned`` (fraction of non-dead neurons whose direction has cosine
    > 0.9 with the class mean of its output-weight sign); ``kind="neuron"`` (final record):
    ``neuron, sign, cos_plus, cos_minus, norm_w``."""
    d, n, m = (10, 40, 50) if quick else (20, 100, 200)
    steps = 6000 if quick else 42000
    x, y = _data(d, n, jax.random.PRNGKey(0))
    net = tl.TwoLayer(width=m, gamma=0.5)
    p = tl.init(jax.random.PRNGKey(1), net, d, init_scale=1e-4)
    tr = tl.gd(p, net, x, y, lr=0.5, steps=steps, record_every=steps // 60, loss="logistic")
    xp = np.asarray(jnp.mean(x[y > 0], 0))
    xm = np.asarray(jnp.mean(x[y < 0], 0))
    nt = tl.neurons(tr, x, directions={"plus": xp, "minus": xm})
    relevant = np.where(nt["a"] > 0, nt["cos_plus"], nt["cos_minus"])
    alive = nt["active"] > 0
    aligned = pd.Series((relevant > 0.9) & alive).groupby(nt["step"]).sum() / \
        pd.Series(alive).groupby(nt["step"]).sum().clip(lower=1)
    hist = tr.history[["step", "time", "train_loss", "eff_rank"]].assign(
        kind="history", aligned=aligned.to_numpy())
    last = nt[nt["step"] == nt["step"].max()]
    neurons = pd.DataFrame({"kind": "neuron", "neuron": last["neuron"],
                            "sign": np.sign(last["a"]), "cos_plus": last["cos_plus"],
                            "cos_minus": last["cos_minus"], "norm_w": last["norm_w"],
                            "active": last["active"]})
    return pd.concat([hist, neurons], ignore_index=True)


def late_slope(df: pd.DataFrame) -> float:
    """Slope of log(loss) vs log(t) over the last half of the run (about -1 for 1/t)."""
    h = df[df["kind"] == "history"]
    h = h[h["time"] >= h["time"].max() / 2]
    return float(np.polyfit(np.log(h["time"]), np.log(h["train_loss"]), 1)[0])


def plot(df: pd.DataFrame):
    h = df[(df["kind"] == "history") & (df["time"] > 0)]
    nr = df[df["kind"] == "neuron"]
    with style():
        fig, axes = new_figure(1, 3)
        ax = axes[0, 0]
        ax.plot(h["time"], h["aligned"], label="aligned fraction")
        ax.plot(h["time"], h["eff_rank"] / h["eff_rank"].max(), label="eff. rank of W (rel.)")
        ax.set_xscale("log")
        ax.set_xlabel("time")
        ax.legend()
        ax = axes[0, 1]
        ax.loglog(h["time"], h["train_loss"], label="train loss")
        t = h["time"].to_numpy()
        ax.loglog(t, h["train_loss"].iloc[-1] * t[-1] / t, "k--", label="1/t")
        ax.set_xlabel("time")
        ax.legend()
        ax = axes[0, 2]
        for s, c in ((1, "tab:red"), (-1, "tab:blue")):
            sub = nr[nr["sign"] == s]
            ax.scatter(sub["cos_plus"], sub["cos_minus"], s=8, c=c,
                       label="a > 0" if s > 0 else "a < 0")
        ax.set_xlabel("cos(w, mean x+)")
        ax.set_ylabel("cos(w, mean x-)")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    h = df[df["kind"] == "history"]
    slope = late_slope(df)
    return ({"aligned fraction": h["aligned"].iloc[-1], "eff rank start": h["eff_rank"].iloc[0],
             "eff rank end": h["eff_rank"].iloc[-1], "late loss slope": slope},
            {"> 90% of neurons aligned": h["aligned"].iloc[-1] > 0.9,
             "W falls to rank ~2": h["eff_rank"].iloc[-1] < 2.5 < h["eff_rank"].iloc[0],
             "loss ~ 1/t late (slope in (-1.6, -0.7))": -1.6 < slope < -0.7})


claim = Claim("small-init neurons align by output-weight sign, W becomes rank ~2 and the loss "
              "falls like 1/t (Boursier et al. 2022)", _claim_check)

make = PaperFigure(NAME, "small-init ReLU neurons align with positive/negative data by the sign "
                         "of their output weight, then loss ~ 1/t with low-rank W (Boursier et al. "
                         "2022; Min et al. 2023)",
                   draw_from(data, plot), claim)
