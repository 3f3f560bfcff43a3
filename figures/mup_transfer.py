"""``mup-transfer``: training loss vs log2 lr for MLPs of growing width under the standard
parametrization (SP) and under muP. The optimal rate drifts with width under SP and stays put
under muP (Yang & Hu 2021, "Tensor Programs IV"; Yang et al. 2022, "Tensor Programs V", Fig. 1).

Two-hidden-layer ReLU MLPs on sklearn digits, Adam (the optimizer of Tensor Programs V's
figure), batch 64, 50 steps, a half-octave grid of rates; muP with its per-layer Adam rates
(``dynkit.models.lr_multipliers``, base width 64), SP with one global rate. Quick: widths
64-256, rates 2^-9..2^-4.5, 2 seeds; full: widths 64-1024, rates 2^-13..2^-3, 3 seeds.
Claim: the spread (max - min over widths) of the optimal log2 lr is at most 1 under muP and
larger under SP."""

from __future__ import annotations

import pandas as pd

import dynkit as dk
from dynkit.analyses.scaling_transfer import lr_transfer, optimal_lr, optimum_spread
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style

__all__ = ["claim", "data", "make", "plot", "plot_transfer", "transfer_claim"]

PARAMETRIZATIONS = {"SP": "standard", "muP": "mup"}


def data(quick: bool = False) -> pd.DataFrame:
    """Final training loss per (parametrization, width, lr, seed): ``lr_transfer`` rows plus
    a ``parametrization`` column."""
    digits = dk.data.load("digits", seed=0)
    widths = [64, 128, 256] if quick else [64, 128, 256, 512, 1024]
    seeds = [0, 1] if quick else [0, 1, 2]
    lrs = [2.0 ** (e / 2) for e in (range(-18, -8) if quick else range(-26, -5))]
    frames = []
    for label, param in PARAMETRIZATIONS.items():
        df = lr_transfer(lambda n, p=param: dk.models.mlp(64, [n, n], 10, parameterization=p),
                         widths, lrs, digits, 50, seeds, optimizer="adam", batch_size=64,
                         lr_multipliers=param == "mup", base_width=64.0)
        frames.append(df.assign(parametrization=label))
    return pd.concat(frames, ignore_index=True)


def plot_transfer(df: pd.DataFrame, axis: str, by: str):
    """One panel per value of ``by``: seed-mean loss vs log2 lr, one line per ``axis`` size,
    the optimum of each marked."""
    groups = list(dict.fromkeys(df[by]))
    with style():
        fig, axes = new_figure(1, len(groups), sharey=True)
        for ax, name in zip(axes[0], groups):
            g = df[df[by] == name]
            curves = g.groupby([axis, "log2_lr"])["loss"].mean().unstack(axis)
            opt = optimal_lr(g, axis).set_index(axis)
            for size in curves.columns:
                line, = ax.plot(curves.index, curves[size], marker=".", label=f"{axis} {size}")
                ax.plot(opt.loc[size, "log2_lr_opt"], opt.loc[size, "loss_opt"], "*",
                        color=line.get_color(), ms=10)
            ax.set_yscale("log")
            ax.set_xlabel("log2 learning rate")
            ax.set_title(str(name))
        axes[0, 0].set_ylabel("training loss")
        axes[0, -1].legend()
        fig.tight_layout()
    return fig


def plot(df: pd.DataFrame):
    return plot_transfer(df, "width", "parametrization")


def transfer_claim(statement: str, axis: str, by: str, stable: str, drifting: str) -> Claim:
    """The claim of an lr-transfer figure: the optimal log2 lr of the ``stable`` group (a value
    of ``by``) spreads by at most one octave over ``axis``, that of ``drifting`` by more."""
    def check(df):
        spread = {b: optimum_spread(g, axis) for b, g in df.groupby(by)}
        measured = {f"{b}: optimal log2 lr spread over {axis}": spread[b]
                    for b in (stable, drifting)}
        checks = {f"{stable}: optimum moves <= 1 octave": spread[stable] <= 1.0,
                  f"{drifting}: optimum moves > 1 octave": spread[drifting] > 1.0}
        return measured, checks

    return Claim(statement, check)


claim = transfer_claim("the optimal lr moves by at most one octave across widths under muP and by "
                       "more under SP (Tensor Programs V)", "width", "parametrization", "muP",
                       "SP")

make = PaperFigure("mup-transfer", "optimal lr vs width: drifts under SP, stable under muP "
                                   "(Tensor Programs V)", draw_from(data, plot), claim)
