"""``lazy-vs-rich-particles``: particle trajectories of a two-layer ReLU net in 2-D for small
and large output scale alpha, and the distance traveled vs alpha (Chizat, Oyallon & Bach
2019, "On lazy training in differentiable programming", Fig. 2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import two_layer as tl

__all__ = ["NAME", "TEACHER_ANGLES", "claim", "data", "make", "plot"]

NAME = "lazy-vs-rich-particles"
TEACHER_ANGLES = (0.3, 2.4, 4.3)


def data(quick: bool = False) -> pd.DataFrame:
    """Gradient descent (mean-field scaling, symmetric balanced init so ``f_0 = 0``) on a
    3-neuron ReLU teacher in 2-D, for several alpha with the ``1/alpha^2`` time scaling.

    Rows ``kind="particle"``: ``alpha, step, neuron, px, py`` with ``(px, py) = alpha |a_i| w_i``;
    rows ``kind="summary"``: ``alpha, rel_dist`` (``|theta(T) - theta(0)| / |theta(0)|``),
    ``train_loss`` at the end.
    """
    alphas = (0.03, 1.0, 10.0) if quick else (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    width, steps = (32, 600) if quick else (128, 4000)
    ang = jax.random.uniform(jax.random.PRNGKey(0), (200,)) * 2 * np.pi
    x = jnp.stack([jnp.cos(ang), jnp.sin(ang)], 1)
    teacher = jnp.array([[np.cos(t), np.sin(t)] for t in TEACHER_ANGLES])
    y = jnp.sum(jax.nn.relu(x @ teacher.T), 1)
    frames = []
    for alpha in tqdm(alphas, desc="lazy-vs-rich", unit="alpha"):
        net = tl.TwoLayer(width=width, gamma=1.0, alpha=alpha)
        p = tl.init(jax.random.PRNGKey(1), net, 2, symmetric=True, balanced=True)
        tr = tl.gd(p, net, x, y, lr=0.02 * min(1.0, alpha), steps=steps,
                   record_every=steps // 20)
        a, w = np.asarray(tr.params["a"]), np.asarray(tr.params["w"])
        pos = alpha * np.abs(a)[..., None] * w
        r, m = a.shape
        frames.append(pd.DataFrame({
            "kind": "particle", "alpha": alpha, "step": np.repeat(tr.history["step"], m),
            "neuron": np.tile(np.arange(m), r), "sign": np.sign(a).ravel(),
            "px": pos[..., 0].ravel(), "py": pos[..., 1].ravel()}))
        frames.append(pd.DataFrame({"kind": ["summary"], "alpha": [alpha],
                                    "rel_dist": [tr.history["rel_dist"].iloc[-1]],
                                    "train_loss": [tr.history["train_loss"].iloc[-1]]}))
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    parts = df[df["kind"] == "particle"]
    summary = df[df["kind"] == "summary"].sort_values("alpha")
    alphas = sorted(parts["alpha"].unique())
    with style():
        fig, axes = new_figure(1, 3)
        for ax, alpha in zip(axes[0, :2], (alphas[0], alphas[-1])):
            sub = parts[parts["alpha"] == alpha]
            for _, g in sub.groupby("neuron"):
                color = "tab:red" if g["sign"].iloc[-1] > 0 else "tab:blue"
                ax.plot(g["px"], g["py"], color=color, lw=0.8, alpha=0.7)
                ax.plot(g["px"].iloc[-1], g["py"].iloc[-1], "o", color=color, ms=2)
            lim = 1.1 * np.abs(sub[["px", "py"]].to_numpy()).max()
            for t in TEACHER_ANGLES:
                ax.plot([0, lim * np.cos(t)], [0, lim * np.sin(t)], "k--", lw=0.8)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(f"alpha = {alpha:g}: " + ("rich" if alpha < 1 else "lazy"))
            ax.set_xlabel("alpha |a| w_1")
            ax.set_ylabel("alpha |a| w_2")
        ax = axes[0, 2]
        ax.loglog(summary["alpha"], summary["rel_dist"], "o-")
        ax.set_xlabel("alpha")
        ax.set_ylabel("|theta(T) - theta(0)| / |theta(0)|")
        ax.set_title("distance traveled")
        fig.tight_layout()
    return fig


def _claim_check(df):
    s = df[df["kind"] == "summary"].sort_values("alpha")
    return ({"rel_dist smallest alpha": s["rel_dist"].iloc[0],
             "rel_dist largest alpha": s["rel_dist"].iloc[-1],
             "max train loss": s["train_loss"].max()},
            {"distance traveled falls with alpha": bool(np.all(np.diff(s["rel_dist"]) < 0)),
             "rich (> 1) at small alpha, lazy (< 0.3) at large alpha":
             s["rel_dist"].iloc[0] > 1 and s["rel_dist"].iloc[-1] < 0.3,
             "every alpha fits (train loss < 5% of 0.47)":
             bool(np.all(s["train_loss"] < 0.05 * 0.47))})


claim = Claim("neurons travel far for small output scale alpha and stay put for large alpha, "
              "every alpha fits (Chizat et al. 2019)", _claim_check)

make = PaperFigure(NAME, "2-D ReLU neurons move far for small alpha and stay put for large "
                         "alpha (Chizat, Oyallon & Bach 2019)",
                   draw_from(data, plot), claim)
