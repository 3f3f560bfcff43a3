"""``hessian-spectrum``: the Hessian of a trained classifier is a bulk plus about ``C``
outliers, and the outliers are the class-mean part of the Gauss–Newton matrix (Sagun, Evci,
Güney, Dauphin & Bottou 2017, Fig. 1; Papyan 2019, "Measurements of three-level hierarchical
structure in the outliers in the spectrum of deepnet Hessians", Figs. 1-2).

A ReLU MLP is trained with cross-entropy on the digits (``C = 10``) by minibatch SGD
(``dynkit.train.fit``) for a few epochs. Its Hessian density is estimated by stochastic Lanczos
quadrature (``dynkit.analyses.hessian.density``), which also detects the outliers (the
spacing-gap rule, ``outlier_ritz``). The class-mean part ``G_class`` of the GGN
(``class_mean_eigenvalues``) is computed exactly. Claims checked on the data
(``spectrum_claims``): the number of outliers is within ``C − 1 .. C + 2``, ``G_class`` has
``C − 1`` eigenvalues above the bulk edge of ``H``, and each of them carries at least 60% of
the matching outlier of ``H`` (``G_class ⪯ G`` makes them lower bounds of ``G``'s; ``H ≈ G``
for the outliers of a trained net).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.analyses.hessian import class_mean_eigenvalues, density
from dynkit.data import load
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.models import mlp
from dynkit.train import fit

__all__ = ["NAME", "claim", "data", "make", "plot", "settings", "spectrum_claims"]

NAME = "hessian-spectrum"
CLASSES = 10


def settings(quick: bool) -> dict:
    """Sizes: quick = width 32, 3 epochs, 80 Lanczos steps x 2 probes; full = width 64,
    3 epochs, 120 steps x 8 probes."""
    if quick:
        return {"width": 32, "epochs": 3, "num_iter": 80, "num_runs": 2}
    return {"width": 64, "epochs": 3, "num_iter": 120, "num_runs": 8}


def data(quick: bool = False) -> pd.DataFrame:
    """Columns ``series, x, value``: ``density`` (x = eigenvalue, value = ρ), ``outlier``
    (x = rank, value = eigenvalue of H), ``class_mean`` (x = rank, value = eigenvalue of
    G_class), ``bulk_edge`` and ``num_params``."""
    s = settings(quick)
    ds = load("digits", seed=0)
    model = mlp(64, [s["width"]] * 2, CLASSES)
    params = fit(model, ds, lr=0.05, batch_size=64, epochs=s["epochs"]).params
    x = jnp.asarray(ds.x_train, jnp.float32)
    y = np.asarray(ds.y_train)
    d = density(model, params, x, y, loss="cross_entropy", num_iter=s["num_iter"],
                num_runs=s["num_runs"], num_points=400)
    cm = class_mean_eigenvalues(model, params, x, y)[:2 * CLASSES]
    rows = [{"series": "density", "x": float(t), "value": float(r)}
            for t, r in zip(d.grid, d.density)]
    rows += [{"series": "outlier", "x": i + 1, "value": float(v)}
             for i, v in enumerate(d.outliers)]
    rows += [{"series": "class_mean", "x": i + 1, "value": float(v)} for i, v in enumerate(cm)]
    rows += [{"series": "bulk_edge", "x": 0, "value": d.bulk_edge},
             {"series": "num_params", "x": 0, "value": model.num_params()}]
    return pd.DataFrame(rows, columns=["series", "x", "value"])


def spectrum_claims(df: pd.DataFrame) -> dict:
    """``num_outliers`` of H, ``class_mean_above_edge`` (eigenvalues of G_class above H's bulk
    edge) and ``min_ratio``, the least ``λ_k(G_class) / λ_k(H)`` over the top ``C − 1``."""
    out = df[df.series == "outlier"].sort_values("x")["value"].to_numpy()
    cm = df[df.series == "class_mean"].sort_values("x")["value"].to_numpy()
    edge = df[df.series == "bulk_edge"]["value"].item()
    k = min(CLASSES - 1, len(out))
    return {"num_outliers": len(out), "class_mean_above_edge": int((cm > edge).sum()),
            "min_ratio": float(np.min(cm[:k] / out[:k])) if k else float("nan"),
            "max_ratio": float(np.max(cm[:k] / out[:k])) if k else float("nan")}


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2)
        ax_d, ax_o = axes[0, 0], axes[0, 1]
        dens = df[df.series == "density"]
        ax_d.semilogy(dens["x"], np.maximum(dens["value"], 1e-8), color="C0")
        edge = df[df.series == "bulk_edge"]["value"].item()
        ax_d.axvline(edge, color="gray", ls=":", lw=1, label="bulk edge")
        for v in df[df.series == "outlier"]["value"]:
            ax_d.axvline(v, color="C3", lw=0.8, alpha=0.7)
        ax_d.set_xlabel("eigenvalue of H")
        ax_d.set_ylabel("density (SLQ)")
        ax_d.set_title(f"bulk + {int((df.series == 'outlier').sum())} outliers (red), C = "
                       f"{CLASSES}")
        ax_d.legend()
        out, cm = df[df.series == "outlier"], df[df.series == "class_mean"]
        ax_o.plot(out["x"], out["value"], "o", color="C3", label="outliers of H")
        ax_o.plot(cm["x"], cm["value"], "x", color="C2", label="class-mean GGN")
        ax_o.axhline(edge, color="gray", ls=":", lw=1)
        ax_o.set_xlabel("rank")
        ax_o.set_ylabel("eigenvalue")
        ax_o.set_title("outliers = class-mean part (Papyan 2019)")
        ax_o.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    m = spectrum_claims(df)
    dens = df[df.series == "density"]
    m["density integral"] = float(np.trapezoid(dens["value"], dens["x"]))
    checks = {f"{CLASSES - 1} <= outliers <= {CLASSES + 2}":
              CLASSES - 1 <= m["num_outliers"] <= CLASSES + 2,
              f"G_class has {CLASSES - 1} eigenvalues above the bulk edge":
              m["class_mean_above_edge"] == CLASSES - 1,
              "0.6 <= lambda_k(G_class) / lambda_k(H) <= 1.05":
              0.6 <= m["min_ratio"] and m["max_ratio"] <= 1.05,
              "density integrates to 1 (1e-3)": abs(m["density integral"] - 1) < 1e-3}
    return m, checks


claim = Claim("a trained classifier's Hessian is a bulk plus about C outliers, and the class-mean "
              "GGN carries C - 1 of them (Sagun et al. 2017; Papyan 2019)", _claim_check)

make = PaperFigure(NAME, "Hessian of a trained digits classifier: a bulk plus ~C outliers, "
                         "from the class-mean GGN (Sagun et al. 2017; Papyan 2019)",
                   draw_from(data, plot), claim)
