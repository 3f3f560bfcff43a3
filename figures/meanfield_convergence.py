"""``meanfield-convergence``: test-risk curves of two-layer ReLU nets trained in mean-field
scaling approach the mean-field limit as the width m grows (Mei, Montanari & Nguyen 2018,
"A mean field view of the landscape of two-layer neural networks", Fig. 2 style).

The limit curve is proxied by the widest network; the gap ``sup_t |R_m(t) - R_ref(t)|``
(seed-averaged) shrinks with m, like ``m^(-1/2)`` (Mei et al. 2018, Thm. 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import two_layer as tl

__all__ = ["NAME", "claim", "data", "gaps", "make", "plot"]

NAME = "meanfield-convergence"


def _task(d: int, n: int, key):
    k1, k2, k3 = jax.random.split(key, 3)
    teacher = jax.random.normal(k1, (3, d)) / np.sqrt(d)

    def label(x):
        return jnp.sum(jax.nn.relu(x @ teacher.T * np.sqrt(d)), 1) / 3

    x, xt = jax.random.normal(k2, (n, d)), jax.random.normal(k3, (1000, d))
    return x, label(x), xt, label(xt)


def data(quick: bool = False) -> pd.DataFrame:
    """GD (time step 0.25) on a 3-neuron ReLU teacher in d = 10, gamma = 1, init_scale 1,
    widths ``m`` and seeds; rows ``m, seed, time, test_loss, train_loss``; ``m = ref`` is the
    widest net used as the mean-field proxy (``is_ref`` column)."""
    widths, ref, seeds, steps = ((4, 16, 64), 256, 2, 160) if quick else \
        ((4, 16, 64, 256), 8192, 6, 1200)
    d = 10
    x, y, xt, yt = _task(d, 400, jax.random.PRNGKey(0))
    frames = []
    for m in tqdm((*widths, ref), desc="meanfield-convergence", unit="width"):
        for seed in range(seeds if m != ref else 1):
            net = tl.TwoLayer(width=m, gamma=1.0)
            p = tl.init(jax.random.PRNGKey(100 + seed), net, d)
            tr = tl.gd(p, net, x, y, lr=0.25, steps=steps, record_every=steps // 40,
                       x_test=xt, y_test=yt)
            frames.append(tr.history[["time", "train_loss", "test_loss"]]
                          .assign(m=m, seed=seed, is_ref=m == ref))
    return pd.concat(frames, ignore_index=True)


def gaps(df: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged ``sup_t |R_m(t) - R_ref(t)|`` per width (test risk)."""
    ref = df[df["is_ref"]].set_index("time")["test_loss"]
    rows = []
    for m, g in df[~df["is_ref"]].groupby("m"):
        per_seed = [np.max(np.abs(s.set_index("time")["test_loss"] - ref))
                    for _, s in g.groupby("seed")]
        rows.append({"m": m, "gap": float(np.mean(per_seed))})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2)
        ax = axes[0, 0]
        for i, (m, g) in enumerate(df.groupby("m")):
            mean = g.groupby("time")["test_loss"].mean()
            ax.semilogy(mean.index, mean.values, color="k" if g["is_ref"].iloc[0] else f"C{i}",
                        lw=2 if g["is_ref"].iloc[0] else 1, label=f"m = {m}")
        ax.set_xlabel("time (mean-field units)")
        ax.set_ylabel("test risk (seed mean)")
        ax.legend()
        gp = gaps(df)
        ax = axes[0, 1]
        ax.loglog(gp["m"], gp["gap"], "o-", label="sup_t |R_m - R_ref|")
        ax.loglog(gp["m"], gp["gap"].iloc[0] * np.sqrt(gp["m"].iloc[0] / gp["m"]), "k--",
                  label="m^(-1/2)")
        ax.set_xlabel("width m")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    g = gaps(df).sort_values("m")
    return ({f"gap m={int(m)}": v for m, v in zip(g["m"], g["gap"])},
            {"gap to the mean-field limit falls with width": bool(np.all(np.diff(g["gap"]) < 0))})


claim = Claim("risk curves approach the mean-field limit as width m grows (Mei, Montanari & "
              "Nguyen 2018)", _claim_check)

make = PaperFigure(NAME, "risk curves of mean-field two-layer nets converge to the mean-field "
                         "limit as width grows (Mei, Montanari & Nguyen 2018)",
                   draw_from(data, plot), claim)
