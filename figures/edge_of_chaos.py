r"""``edge-of-chaos``: the :math:`(\sigma_w^2, \sigma_b^2)` phase diagram of deep tanh networks,
the order-to-chaos critical line :math:`\chi_1 = 1` and the correlation depth scale
:math:`\xi_c` as a heatmap (Poole et al. 2016, "Exponential expressivity in deep neural networks
through transient chaos", Fig. 2; Schoenholz et al. 2017, "Deep Information Propagation",
Fig. 1).

:math:`\xi_c = -1/\log\chi_c` (:func:`dynkit.theory.signal_prop.depth_scales`) is the number of
layers over which the correlation between two inputs relaxes to its fixed point; it diverges on
the critical line, where signals propagate through arbitrarily deep networks.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import signal_prop

__all__ = ["claim", "data", "make", "plot"]


def data(quick: bool = False) -> pd.DataFrame:
    """Depth scales of tanh on a :math:`\\sigma_w^2\\times\\sigma_b^2` grid, one row per point
    (the :class:`~dynkit.theory.signal_prop.DepthScales` fields) plus ``sw2_critical``, the
    critical :math:`\\sigma_w^2` at that row's :math:`\\sigma_b^2`."""
    n_w, n_b, degree = (15, 7, 60) if quick else (60, 31, 200)
    sw2 = np.linspace(0.5, 4.0, n_w)
    sb2 = np.linspace(0.0, 0.3, n_b)
    df = pd.concat([signal_prop.depth_scales_table(jnp.tanh, sw2, [b], degree=degree)
                    for b in tqdm(sb2, desc="edge-of-chaos", unit="sigma_b^2")],
                   ignore_index=True)
    crit = signal_prop.critical_line(jnp.tanh, sb2, sw2_range=(0.3, 8.0), degree=degree)
    return df.merge(crit[["sb2", "sw2"]].rename(columns={"sw2": "sw2_critical"}), on="sb2")


def plot(df: pd.DataFrame):
    """Left: heatmap of :math:`\\xi_c` with the critical line. Right: :math:`\\xi_c` against
    :math:`\\sigma_w^2` at a few :math:`\\sigma_b^2`, critical points dashed."""
    grid = df.pivot_table(index="sb2", columns="sw2", values="xi_c")
    xi = np.clip(grid.to_numpy(), 0.3, 1e3)
    crit = df.drop_duplicates("sb2").sort_values("sb2")
    with style():
        fig, axes = new_figure(1, 2, figsize=(9.0, 3.4))
        ax = axes[0, 0]
        mesh = ax.pcolormesh(grid.columns, grid.index, xi, shading="nearest",
                             norm=LogNorm(vmin=0.5, vmax=min(1e3, np.nanmax(xi))))
        fig.colorbar(mesh, ax=ax, label=r"depth scale $\xi_c$")
        ax.plot(crit["sw2_critical"], crit["sb2"], "w-", lw=2, label=r"$\chi_1 = 1$")
        ax.text(0.05, 0.9, "ordered", transform=ax.transAxes, color="w")
        ax.text(0.7, 0.1, "chaotic", transform=ax.transAxes, color="w")
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_ylabel(r"$\sigma_b^2$")
        ax.set_title("tanh: order-to-chaos transition")
        ax.legend(loc="upper right")
        ax.grid(False)
        ax = axes[0, 1]
        sb2s = crit["sb2"].to_numpy()
        for i, b in enumerate(sb2s[:: max(1, len(sb2s) // 4)]):
            row = df[df["sb2"] == b].sort_values("sw2")
            ax.plot(row["sw2"], np.clip(row["xi_c"], None, 1e3), marker=".", color=f"C{i}",
                    label=rf"$\sigma_b^2={b:.2f}$")
            ax.axvline(row["sw2_critical"].iloc[0], color=f"C{i}", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_ylabel(r"$\xi_c$ (clipped at $10^3$)")
        ax.set_title(r"$\xi_c$ peaks at the critical line (dashed)")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    step = np.diff(np.sort(df["sw2"].unique())).max()
    measured, checks = {}, {}
    for sb2, g in df.groupby("sb2"):
        best = g.loc[g["xi_c"].idxmax()]
        far = g[np.abs(g["sw2"] - g["sw2_critical"]) > 3 * step]
        measured[f"sb2={sb2:g} argmax sw2 - critical"] = best["sw2"] - best["sw2_critical"]
        measured[f"sb2={sb2:g} peak/far xi_c"] = best["xi_c"] / far["xi_c"].max()
        checks[f"sb2={sb2:g}: xi_c peaks on the critical line"] = (
            abs(best["sw2"] - best["sw2_critical"]) <= step
            and best["xi_c"] > 3 * far["xi_c"].max())
    return measured, checks


claim = Claim("the depth scale xi_c peaks on the critical line chi_1 = 1, > 3x its value away "
              "from it (Schoenholz et al. 2017)", _claim_check)

make = PaperFigure("edge-of-chaos", "tanh phase diagram: critical line and depth scale xi_c "
                                    "(Poole et al. 2016; Schoenholz et al. 2017)",
                   draw_from(data, plot), claim)
