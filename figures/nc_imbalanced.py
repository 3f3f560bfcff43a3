"""``nc-imbalanced``: deep linear networks trained with MSE and weight decay on imbalanced
classes converge to the predicted *orthogonal* frame whose lengths depend on the class counts
(Dang, Tran, Osher, Tran-The, Ho & Nguyen 2023, "Neural Collapse in Deep Linear Networks: From
Balanced to Imbalanced Data"); past a count threshold the minority classes collapse to zero.

Setting: the unconstrained-features model realised by a bias-free linear network
``f(x) = W_L ⋯ W_2 W_1 x`` whose inputs are one-hot sample identities ``x_i = e_i``, so the
columns of ``W_1`` are free features; full-batch gradient descent on
``1/(2N) ‖W_L ⋯ W_1 - Y‖_F² + λ/2 Σ_l ‖W_l‖_F²`` (the trainer's ``loss="mse"`` and coupled weight
decay). Its global minimizer (see ``deep_linear_norms``) has orthogonal class means ``μ_k`` and
classifier rows ``w_k``, no within-class spread, and ``‖w_k‖ = s_k^{1/L}``,
``‖μ_k‖ = s_k^{(L-1)/L} / √n_k``; for ``L = 2`` this is ``collapse_imbalanced.
ufm_imbalanced_norms`` with ``λ_W = λ_H = λ``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.collapse import neural_collapse, readout
from dynkit.analyses.collapse_imbalanced import class_norms, deep_linear_norms, imbalanced_collapse
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = ["COUNTS", "QUICK_COUNTS", "claim", "data", "make", "plot", "run", "train_ufm"]

COUNTS = (400, 400, 100, 100, 25)
QUICK_COUNTS = (80, 80, 20, 20, 5)


def train_ufm(counts, lam: float, depth: int, steps: int, lr: float, width: int = 32):
    """Train the bias-free depth-``L`` linear net on one-hot inputs by full-batch gradient
    descent (the loss is a mean over samples, so the step ``lr`` is of order ``N / 100``);
    returns ``(model, params, features, labels)``."""
    counts = np.asarray(counts)
    N, C = int(counts.sum()), len(counts)
    y = np.repeat(np.arange(C), counts)
    data = dk.data.from_arrays(np.eye(N, dtype=np.float32), y, test_fraction=0.0,
                               name="one-hot imbalanced")
    model = dk.models.mlp(N, [width] * (depth - 1), C, activation="identity", bias=False)
    res = fit(model, data, optimizer="sgd", lr=lr, weight_decay=lam, batch_size=N, steps=steps,
              loss="mse", seed=0, progress=False)
    feats = np.asarray(model.features(res.params, data.x_train), dtype=np.float64)
    return model, res.params, feats, data.y_train


def run(counts, lam: float, depth: int, steps: int, lr: float) -> pd.DataFrame:
    """Measured vs predicted per-class norms and the geometry scalars of one trained net:
    rows ``depth, lam, kind ("class"|"geometry"), class, count, quantity, measured, predicted``."""
    model, params, H, y = train_ufm(counts, lam, depth, steps, lr)
    W, _ = readout(model, params)
    pred = deep_linear_norms(counts, lam, depth)
    alive = pred["w_norm"].to_numpy() > 0
    meas = class_norms(H, y, W, num_classes=len(counts))
    rows = []
    for q_meas, q_pred in (("w_norm", "w_norm"), ("mean_norm", "mean_norm")):
        for k in range(len(counts)):
            rows.append(("class", k, counts[k], q_pred, float(meas[q_meas][k]),
                         float(pred[q_pred][k])))
    # geometry of the surviving classes: predicted orthogonal, aligned, no within-class spread
    sel = np.isin(y, np.flatnonzero(alive))
    if alive.sum() >= 2:
        geo = imbalanced_collapse(H[sel], y[sel], W, num_classes=len(counts))
        rows.append(("geometry", -1, -1, "orthogonality", geo["orthogonality"], 0.0))
        rows.append(("geometry", -1, -1, "orthogonality_W", geo["orthogonality_W"], 0.0))
        nc = neural_collapse(H[sel], y[sel], num_classes=len(counts), nc1_variant="trace_ratio")
        rows.append(("geometry", -1, -1, "nc1_trace_ratio", nc["nc1"], 0.0))
    df = pd.DataFrame(rows, columns=["kind", "class", "count", "quantity", "measured",
                                     "predicted"])
    return df.assign(depth=depth, lam=lam)


def data(quick: bool = False) -> pd.DataFrame:
    """Depths 2 and 3 (and 4 in full mode) at one λ (``experiment="depth"``) and a λ sweep at
    depth 2 crossing the minority thresholds ``λ = √n_k / N`` (``experiment="lambda"``).
    Full mode: class counts ``COUNTS`` (N = 1025); quick: the same counts / 5 (N = 205)."""
    if quick:
        counts, steps, lr, depths, base = QUICK_COUNTS, 800, 2.0, (2, 3), 2e-3
        lams = (6e-3, 1.6e-2)
    else:
        counts, steps, lr, depths, base = COUNTS, 6000, 5.0, (2, 3, 4), 1e-3
        lams = (2.5e-4, 5e-4, 2e-3, 3e-3, 4e-3, 4.5e-3, 5.5e-3, 7e-3, 8.5e-3, 1.1e-2)
    runs = [("depth", base, d) for d in depths] + [("lambda", lam, 2) for lam in lams]
    frames = [run(counts, lam, depth, steps, lr).assign(experiment=experiment)
              for experiment, lam, depth in tqdm(runs, desc="nc-imbalanced", unit="run")]
    df = pd.concat(frames, ignore_index=True)
    return df[["experiment", "depth", "lam", "kind", "class", "count", "quantity", "measured",
               "predicted"]]


def plot(df: pd.DataFrame):
    cls = df[df["kind"] == "class"]
    base = cls[cls["experiment"] == "depth"]
    lam0 = float(base["lam"].iloc[0])
    first = base[(base["depth"] == base["depth"].iloc[0]) & (base["quantity"] == "w_norm")]
    counts = first.sort_values("class")["count"].to_numpy()
    with style():
        fig, axes = new_figure(1, 4, figsize=(16.0, 3.4))
        for ax, q, label in ((axes[0, 0], "w_norm", "classifier norm ‖w_k‖"),
                             (axes[0, 1], "mean_norm", "class-mean norm ‖μ_k‖")):
            for i, (depth, g) in enumerate(base[base["quantity"] == q].groupby("depth")):
                g = g.sort_values("count")
                ax.plot(g["count"], g["predicted"], "-", color=f"C{i}", label=f"L={depth} theory")
                ax.plot(g["count"], g["measured"], "o", color=f"C{i}", mfc="none",
                        label=f"L={depth} trained")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("class count n_k")
            ax.set_ylabel(label)
            ax.set_title(f"λ = {lam0:g}, N = {counts.sum()}", fontsize="medium")
        axes[0, 0].legend(fontsize="small")
        ax = axes[0, 2]
        sweep = cls[(cls["depth"] == 2) & (cls["quantity"] == "w_norm")]
        for i, (count, g) in enumerate(sweep.groupby("count")):
            g = g.drop_duplicates("lam").sort_values("lam")
            lam = np.linspace(g["lam"].min(), g["lam"].max(), 200)
            k = int(np.flatnonzero(counts == count)[0])
            theory = [deep_linear_norms(counts, v, 2)["w_norm"][k] for v in lam]
            ax.plot(lam, theory, "-", color=f"C{i}")
            ax.plot(g["lam"], g["measured"], "o", mfc="none", color=f"C{i}", label=f"n={count}")
        ax.set_xlabel("weight decay λ")
        ax.set_ylabel("‖w_k‖ (L=2)")
        ax.set_title("minority classes die at λ = √n_k / N", fontsize="medium")
        ax.legend(fontsize="small")
        ax = axes[0, 3]
        geo = df[(df["kind"] == "geometry") & (df["experiment"] == "depth")]
        names = list(dict.fromkeys(geo["quantity"]))
        width = 0.8 / max(geo["depth"].nunique(), 1)
        for i, (depth, g) in enumerate(geo.groupby("depth")):
            vals = g.set_index("quantity")["measured"].reindex(names)
            ax.bar(np.arange(len(names)) + i * width, np.maximum(vals.abs(), 1e-16), width,
                   label=f"L={depth}", color=f"C{i}")
        ax.set_xticks(np.arange(len(names)) + width * (geo["depth"].nunique() - 1) / 2)
        ax.set_xticklabels(["mean |cos μ|", "mean |cos w|", "NC1"], fontsize="small")
        ax.set_yscale("log")
        ax.set_title("orthogonal frame, no spread (theory: 0)", fontsize="medium")
        ax.legend(fontsize="small")
        fig.tight_layout()
    return fig


def _claim_check(df):
    cls = df[df["kind"] == "class"]
    alive, dead = cls[cls["predicted"] > 0], cls[cls["predicted"] == 0]
    rel = ((alive["measured"] - alive["predicted"]).abs() / alive["predicted"].abs()).max()
    worst_dead = max((g["measured"].max() / alive[alive["quantity"] == q]["measured"].min()
                      for q, g in dead.groupby("quantity")), default=float("nan"))
    return ({"max rel error of alive class norms": rel, "dead classes": len(dead),
             "largest dead / smallest alive norm": worst_dead},
            {"alive class norms match the prediction within 1%": rel < 1e-2,
             "minority collapse: some class is predicted dead": len(dead) > 0,
             "dead classes measured < 0.01 x smallest alive": worst_dead < 0.01})


claim = Claim("deep linear nets on imbalanced classes match the predicted class-mean/classifier"
              " norms and show minority collapse (Dang et al. 2023)", _claim_check)

make = PaperFigure("nc-imbalanced", "deep linear nets on imbalanced classes vs the predicted "
                                    "orthogonal frame and minority collapse (Dang et al. 2023)",
                   draw_from(data, plot), claim)
