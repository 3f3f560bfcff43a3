"""``ntk-evolution``: the empirical NTK moves fast early in training and slowly later (Fort et
al. 2020, "Deep learning versus kernel learning: an empirical study of loss landscape geometry
and the time evolution of the neural tangent kernel", Figs. 3-4), while it aligns with the labels
(Baratin et al. 2021, "Implicit regularization via neural feature alignment").

An MLP is trained on the digits by mini-batch SGD (cross-entropy) with ``dynkit.train.fit``;
chained ``fit`` calls on one output folder save checkpoints at log-spaced steps (a resumed run
continues exactly where it stopped). ``dynkit.analyses.ntk_dynamics.ntk_series`` then gives,
per checkpoint, on a fixed set of training inputs:

* kernel distance to initialization ``d(K_0, K_t) = 1 − ⟨K_0, K_t⟩_F / (‖K_0‖ ‖K_t‖)``;
* kernel velocity ``d(K_{t_prev}, K_t) / (t − t_prev)`` (distance per step between
  consecutive checkpoints);
* centered kernel-target alignment (Cortes et al. 2012) with the one-hot labels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.analyses.ntk_dynamics import ntk_series
from dynkit.data import load
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.models import mlp
from dynkit.schema import REQUIRED, tidy
from dynkit.train import fit

__all__ = [
    "METRICS",
    "NAME",
    "claim",
    "data",
    "make",
    "metric",
    "plot",
    "save_steps",
    "settings",
    "train_run",
]

NAME = "ntk-evolution"
METRICS = ("kernel_distance_init", "kernel_velocity", "centered_alignment")


def settings(quick: bool) -> dict:
    """Sizes: quick = width 128, 600 SGD steps, 12 checkpoints, NTK on 100 inputs."""
    if quick:
        return {"widths": [128, 128], "steps": 600, "saves": 12, "n_kernel": 100, "lr": 0.1,
                "batch": 64}
    return {"widths": [512, 512, 512], "steps": 6000, "saves": 30, "n_kernel": 400,
            "lr": 0.1, "batch": 64}


def save_steps(total: int, saves: int) -> list[int]:
    """Distinct, roughly log-spaced steps in ``[1, total]`` (``total`` included)."""
    return sorted(set(np.round(np.geomspace(1, total, saves)).astype(int).tolist()))


def train_run(out_dir: Path, s: dict, seed: int = 0):
    """Train on digits, saving checkpoints at step 0 and at ``save_steps``; returns the
    training history (loss/accuracy at those steps)."""
    ds = load("digits", seed=seed)
    model = mlp(64, s["widths"], 10)
    history = None
    for step in tqdm(save_steps(s["steps"], s["saves"]), desc="ntk-evolution (train)",
                     unit="checkpoint"):
        res = fit(model, ds, optimizer="sgd", lr=s["lr"], batch_size=s["batch"], steps=step,
                  seed=seed, out_dir=out_dir, progress=False)
        history = res.history
    return ds, history


def data(quick: bool = False) -> pd.DataFrame:
    """The tidy series ``step, epoch, metric, value``: the ``ntk_series`` metrics (all of
    them) plus ``train_loss``, ``test_accuracy`` from the training history."""
    s = settings(quick)
    with tempfile.TemporaryDirectory() as tmp:
        ds, history = train_run(Path(tmp), s)
        x, y = ds.x_train[: s["n_kernel"]], ds.y_train[: s["n_kernel"]]
        series = ntk_series(tmp, x, y, num_classes=10)
    extra = [
        history[history["split"] == "train"].assign(metric="train_loss", value=lambda d: d["loss"]),
        history[history["split"] == "test"].assign(metric="test_accuracy",
                                                   value=lambda d: d["accuracy"]),
    ]
    return tidy(pd.concat([series, *(e[list(REQUIRED)] for e in extra)], ignore_index=True))


def metric(df: pd.DataFrame, name: str) -> pd.Series:
    """One metric as a Series indexed by step."""
    return df[df["metric"] == name].set_index("step")["value"].sort_index()


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 3)
        d = metric(df, "kernel_distance_init")
        ax = axes[0, 0]
        ax.semilogx(d.index[1:], d.to_numpy()[1:], "o-")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("kernel distance to init")
        ax.set_title("distance d(K_0, K_t)")
        v = metric(df, "kernel_velocity")
        ax = axes[0, 1]
        ax.loglog(v.index, v.to_numpy(), "o-")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("d(K_prev, K_t) / steps")
        ax.set_title("kernel velocity")
        a = metric(df, "centered_alignment")
        ax = axes[0, 2]
        ax.semilogx(a.index[1:], a.to_numpy()[1:], "o-", label="NTK-label alignment")
        acc = metric(df, "test_accuracy")
        ax.semilogx(acc.index[1:], acc.to_numpy()[1:], "s--", label="test accuracy")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("value")
        ax.set_title("centered kernel-target alignment")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    vel = metric(df, "kernel_velocity")
    align = metric(df, "centered_alignment")
    early, late = vel.iloc[:3].mean(), vel.iloc[-3:].mean()
    return ({"early/late velocity": early / late, "alignment start": align.iloc[0],
             "alignment end": align.iloc[-1]},
            {"kernel moves > 10x faster early than late": early > 10 * late,
             "the NTK aligns with the labels (+0.05)": align.iloc[-1] > align.iloc[0] + 0.05})


claim = Claim("the empirical NTK moves fast early and slowly later, and aligns with the labels "
              "(Fort et al. 2020)", _claim_check)

make = PaperFigure(NAME, "empirical NTK of an MLP on digits: distance to init, velocity and "
                         "label alignment; fast early, slow later (Fort et al. 2020)",
                   draw_from(data, plot), claim)
