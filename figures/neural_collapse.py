"""``neural-collapse``: NC1-NC4 keep falling after the training error reaches zero, the terminal
phase of training (Papyan, Han & Donoho 2020, "Prevalence of neural collapse during the terminal
phase of deep learning training", Fig. 2-7).

Networks are trained on digits with SGD + momentum and weight decay 5e-4 (as in the paper) far
past zero training error; at log-spaced epochs ``analyses.collapse_series`` measures, on the
training set, NC1 ``Tr(Σ_W Σ_B^†)/C``, NC2 (class-mean equinorm and distance to the simplex ETF),
NC3 ``‖W/‖W‖ - M/‖M‖‖²`` and NC4 (nearest-class-center disagreement).
"""

from __future__ import annotations

import tempfile

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.collapse_series import collapse_series
from dynkit.checkpoints import Checkpoint
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["PANELS", "claim", "data", "make", "network_series", "plot", "train_series",
           "zero_error_epoch"]

#: (panel title, metrics drawn in it: solid, dashed)
PANELS = (
    ("training error", ("train_error",)),
    ("NC1: Tr(Σ_W Σ_B†)/C", ("nc1",)),
    ("NC2: equinorm (means, W dashed)", ("nc2_equinorm", "nc2_equinorm_W")),
    ("NC2: distance to simplex ETF", ("nc2_etf",)),
    ("NC3: ‖W/‖W‖ − M/‖M‖‖²", ("nc3",)),
    ("NC4: NCC ≠ network", ("nc4",)),
)


def _epochs(total: int, points: int) -> list[int]:
    """0 and ``points`` roughly log-spaced epochs up to ``total``."""
    return [0] + sorted({int(e) for e in np.geomspace(1, total, points).round()})


def train_series(model, data, epochs: list[int], desc: str = "train", **fit_kwargs):
    """Train once, pausing at each of ``epochs`` (resuming the same run, optimizer state
    included), with a progress bar over the epochs; returns ``(checkpoints, history)`` with
    in-memory ``Checkpoint``s."""
    ckpts = []
    # the initial params serve as the start of the first call and as the template of the
    # resumed ones (saves re-tracing model.init on every call)
    init = model.init(jax.random.PRNGKey(fit_kwargs.get("seed", 0)))
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=max(epochs), desc=desc,
                                                    unit="epoch") as bar:
        for e in epochs:
            res = fit(model, data, epochs=e, out_dir=tmp, params=init, progress=False,
                      **fit_kwargs)
            step = int(res.history["step"].max())
            ckpts.append(Checkpoint(model, res.params, step, {"epoch": float(e)}, None))
            bar.update(e - bar.n)
    return ckpts, res.history


def network_series(name: str, model, data, total_epochs: int, points: int,
                   lr: float = 0.1, lr_schedule: str = "constant",
                   weight_decay: float = 5e-4) -> pd.DataFrame:
    """NC metrics and train/test error of one network vs epoch (SGD, momentum 0.9,
    ``weight_decay``, batch 64, ``lr_schedule`` over all ``total_epochs``): ``network, step,
    epoch, metric, value``."""
    batch = 64
    horizon = total_epochs * (len(data.x_train) // min(batch, len(data.x_train)))
    ckpts, hist = train_series(model, data, _epochs(total_epochs, points), optimizer="momentum",
                               lr=lr, lr_schedule=lr_schedule, schedule_steps=horizon,
                               momentum=0.9, weight_decay=weight_decay, batch_size=batch,
                               seed=0, desc=f"neural-collapse {name}")
    nc = collapse_series(ckpts, data.x_train, data.y_train)
    err = hist.assign(metric=hist["split"] + "_error", value=1.0 - hist["accuracy"])
    df = pd.concat([nc, err[["step", "epoch", "metric", "value"]]], ignore_index=True)
    return df.assign(network=name)[["network", "step", "epoch", "metric", "value"]]


def data(quick: bool = False) -> pd.DataFrame:
    """Quick: a 2-hidden-layer MLP (width 128, constant lr 0.1), 200 epochs. Full: MLP (3 x 512)
    and ResNet-20 on the 8x8 digit images, 350 epochs each as in the paper (SGD, momentum 0.9,
    weight decay 5e-4). ResNet-20: lr 0.05 divided by 10 twice (``lr_schedule="step"``, at 50%
    and 75% of the epochs, as Papyan et al. 2020 do). MLP: constant lr 0.05. With the step
    schedule the MLP does not collapse here (issue 19: NC1 0.15, ETF distance 0.63; weight
    decay 5e-3 and 600 epochs: NC1 0.28). It reaches zero training error at epoch ~8, so most
    of its terminal phase would run at lr 5e-3 and 5e-4 (our reading of why NC1 stalls); at a
    constant 0.05 its NC1 falls from 1.33 to 0.12 (measured; a constant 0.1 diverges). See REPRODUCTION.md."""
    flat = dk.data.load("digits", seed=0)
    if quick:
        return network_series("MLP", dk.models.mlp(64, [128, 128], 10), flat, 200, 12)
    image = dk.data.load("digits", seed=0, image=True)
    resnet = dk.models.build({"arch": "resnet20", "input_shape": [8, 8, 1], "num_classes": 10,
                              "width": 16})
    return pd.concat([
        network_series("MLP", dk.models.mlp(64, [512, 512, 512], 10), flat, 350, 24, lr=0.05),
        network_series("ResNet-20", resnet, image, 350, 24, lr=0.05, lr_schedule="step"),
    ], ignore_index=True)


def zero_error_epoch(df: pd.DataFrame, network: str) -> float:
    """First epoch at which the recorded training error is 0 (NaN if never)."""
    g = df[(df["network"] == network) & (df["metric"] == "train_error")].sort_values("epoch")
    hit = g[g["value"] == 0]
    return float(hit["epoch"].iloc[0]) if len(hit) else float("nan")


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(2, 3)
        for ax, (title, metrics) in zip(axes.flat, PANELS):
            for k, (net, g) in enumerate(df.groupby("network", sort=False)):
                color = f"C{k}"
                for metric, ls in zip(metrics, ("-", "--")):
                    s = g[g["metric"] == metric].sort_values("epoch")
                    ax.plot(s["epoch"], s["value"], ls, color=color, marker=".",
                            label=net if ls == "-" else None)
                tpt = zero_error_epoch(df, net)
                if np.isfinite(tpt):
                    ax.axvline(tpt, color=color, lw=0.8, ls=":")
            if metrics[0] in ("train_error", "nc4"):
                ax.set_yscale("symlog", linthresh=1e-3)  # these reach exactly 0
                ax.set_ylim(bottom=0)
            else:
                ax.set_yscale("log")
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(0, df["epoch"].max())
            ax.set_xlabel("epoch")
            ax.set_title(title, fontsize="medium")
        axes[0, 0].legend(title="dotted: zero train error", fontsize="small")
        fig.tight_layout()
    return fig


def _collapse_check(df: pd.DataFrame):
    measured, checks = {}, {}
    for net in dict.fromkeys(df["network"]):
        g = df[df["network"] == net]
        err = g[g["metric"] == "train_error"].sort_values("epoch")["value"]
        nc1 = g[g["metric"] == "nc1"].sort_values("epoch")
        tpt = zero_error_epoch(df, net)
        after = nc1[nc1["epoch"] >= tpt]["value"] if np.isfinite(tpt) else nc1["value"].iloc[-1:]
        measured.update({f"{net} final train error": float(err.iloc[-1]),
                         f"{net} NC1 first": float(nc1["value"].iloc[0]),
                         f"{net} NC1 last": float(nc1["value"].iloc[-1]),
                         f"{net} zero-error epoch": tpt})
        checks[f"{net}: zero train error at the end"] = err.iloc[-1] == 0
        checks[f"{net}: NC1 last < 0.2 x first"] = (nc1["value"].iloc[-1]
                                                    < 0.2 * nc1["value"].iloc[0])
        checks[f"{net}: NC1 falls by > 30% after zero train error"] = (
            np.isfinite(tpt) and after.iloc[-1] < 0.7 * after.iloc[0])
    return measured, checks


#: Papyan et al. 2020: training error reaches 0 and NC1 keeps falling in the terminal phase
claim = Claim("every network reaches zero train error, NC1 ends < 0.2 x its start and falls by "
              "> 30% after zero error (Papyan et al. 2020)", _collapse_check)

make = PaperFigure("neural-collapse", "NC1-NC4 vs epoch into the terminal phase for an MLP and "
                                      "ResNet-20 on digits (Papyan et al. 2020)",
                   draw_from(data, plot), claim)
