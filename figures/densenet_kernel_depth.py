r"""``densenet-kernel-depth``: the NNGP correlation of two inputs against depth at
initialization, for plain, residual (:math:`1/\sqrt{L}` branches) and densely connected
(concatenation) ReLU networks, with the plain network's correlation map.

A plain ReLU network iterates the correlation map :math:`c \mapsto f(c)` of the arc-cosine
kernel, whose only fixed point is :math:`c^* = 1`: with depth, every pair of inputs becomes
perfectly correlated and the kernel forgets the inputs (Schoenholz et al. 2017, "Deep
information propagation"; Hayou et al. 2019). A residual net with :math:`1/\sqrt{L}`
branches moves the correlation only :math:`O(1/L)` per block, so the depth-:math:`L`
correlation has a finite limit (Hayou et al. 2021). A DenseNet concatenates every earlier
layer (Huang et al. 2017): its output keeps the stem's block, whose correlation is the
input's, and each later block is one map away from the blocks before it
(:mod:`dynkit.theory.stax_blocks`), so the output correlation stays below the plain
network's. It still rises with depth, since the stem is a shrinking share
(``stem / (stem + growth · L)``) of the concatenation: at ``c0 = 0`` it goes from 0.12 at
``L = 1`` to 0.59 at ``L = 64`` (plain: 0.33 to 0.994). The claim checked on the CSV, per
``c0``: at the largest depth the plain network's correlation is > 0.9 and both the dense and
the residual networks' stay > 0.25 below it; the dense network's is below the plain one's at
every depth; the residual network's rises by < 0.6 x the plain network's rise.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import dual_activations as duals
from dynkit.theory import stax

__all__ = ["claim", "data", "make", "plot"]

W_STD, B_STD = 2.0 ** 0.5, 0.1
ARCHS = ("plain", "residual", "dense")


def _network(arch: str, depth: int):
    if arch == "plain":
        layers = [stax.Dense(8, W_std=W_STD, b_std=B_STD)]
        for _ in range(depth):
            layers += [stax.Relu(), stax.Dense(8, W_std=W_STD, b_std=B_STD)]
        return stax.serial(*layers)
    if arch == "residual":
        return stax.stax_resnet(depth, 8, W_std=W_STD, b_std=B_STD, readout=False)
    return stax.stax_densenet(depth, 8, stem=16, filter_shape=None, W_std=W_STD, b_std=B_STD,
                              readout=False)


def _inputs(c0s):
    """Unit-norm inputs: ``x_0`` and one ``x_i`` per ``c0`` with ``x_0 . x_i = c0``."""
    rows = [[1.0, 0.0]] + [[c, (1 - c * c) ** 0.5] for c in c0s]
    return jnp.asarray(rows, jnp.float32)


def data(quick: bool = False) -> pd.DataFrame:
    """Rows ``arch, depth, c0, correlation`` (NNGP correlation ``K12 / sqrt(K11 K22)`` of the
    depth-``L`` output), plus ``arch="relu map"`` rows ``c0 -> correlation = f(c0)``."""
    depths = [1, 4, 16] if quick else [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    c0s = [0.0, 0.5]
    x = _inputs(c0s)
    rows = []
    for arch, depth in tqdm([(a, d) for a in ARCHS for d in depths],
                            desc="densenet-kernel-depth", unit="network"):
        k = np.asarray(_network(arch, depth)[2](x, None, "nngp"), np.float64)
        for i, c0 in enumerate(c0s, start=1):
            rows.append({"arch": arch, "depth": depth, "c0": c0,
                         "correlation": k[0, i] / np.sqrt(k[0, 0] * k[i, i])})
    grid = np.linspace(-1.0, 1.0, 41 if quick else 201)
    mapped = np.asarray(duals.relu_dual(1.0, grid, 1.0)[0]) * 2.0  # q = 1 -> q' = 1 (W² = 2)
    rows += [{"arch": "relu map", "depth": np.nan, "c0": c, "correlation": m}
             for c, m in zip(grid, mapped)]
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame):
    """Left: correlation against depth per architecture (solid ``c0 = 0``, dashed
    ``c0 = 0.5``). Right: the ReLU correlation map with the diagonal and a cobweb from 0."""
    with style():
        fig, axes = new_figure(1, 2, figsize=(9.0, 3.4))
        ax = axes[0, 0]
        for i, arch in enumerate(ARCHS):
            for c0, ls in ((0.0, "-"), (0.5, "--")):
                d = df[(df["arch"] == arch) & (df["c0"] == c0)].sort_values("depth")
                ax.plot(d["depth"], d["correlation"], ls, marker=".", color=f"C{i}",
                        label=arch if c0 == 0.0 else None)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("depth L")
        ax.set_ylabel("NNGP correlation")
        ax.set_title("concatenation preserves correlation")
        ax.legend()
        ax = axes[0, 1]
        m = df[df["arch"] == "relu map"].sort_values("c0")
        ax.plot(m["c0"], m["correlation"], color="C0", label=r"ReLU map f(c) ($\sigma_w^2=2, \sigma_b=0$)")
        ax.plot([-1, 1], [-1, 1], "k:", lw=0.8, label="c = f(c)")
        c, xs, ys = 0.0, [], []
        grid, vals = m["c0"].to_numpy(), m["correlation"].to_numpy()
        for _ in range(6):
            nxt = float(np.interp(c, grid, vals))
            xs += [c, c]
            ys += [c, nxt]
            c = nxt
        ax.plot(xs, ys, color="C3", lw=1, label="plain net iterates")
        ax.set_xlabel("c (layer l)")
        ax.set_ylabel("c (layer l + 1)")
        ax.set_title("fixed point c* = 1")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    nets = df[df["arch"] != "relu map"]
    deepest = nets[nets["depth"] == nets["depth"].max()]
    measured, checks = {}, {}
    for c0, g in deepest.groupby("c0"):
        c = g.set_index("arch")["correlation"]
        measured.update({f"c0={c0:g} deepest {a}": c[a] for a in ("plain", "dense", "residual")})
        checks[f"c0={c0:g}: plain > 0.9 at the deepest depth"] = c["plain"] > 0.9
        checks[f"c0={c0:g}: dense and residual stay > 0.25 below plain"] = (
            c["dense"] < c["plain"] - 0.25 and c["residual"] < c["plain"] - 0.25)
    for c0, g in nets.groupby("c0"):
        by_depth = g.pivot_table(index="depth", columns="arch", values="correlation")
        checks[f"c0={c0:g}: dense below plain at every depth"] = bool(
            (by_depth["dense"] < by_depth["plain"]).all())
        rise = by_depth.max() - by_depth.min()
        measured[f"c0={c0:g} rise dense/plain"] = rise["dense"] / rise["plain"]
        measured[f"c0={c0:g} rise residual/plain"] = rise["residual"] / rise["plain"]
        checks[f"c0={c0:g}: residual correlation rises < 0.6 x plain's"] = (
            rise["residual"] < 0.6 * rise["plain"])
    return measured, checks


claim = Claim("with depth a plain ReLU net's input correlation goes to 1; residual 1/sqrt(L) "
              "branches hold it near its start and dense connectivity keeps it below plain's at "
              "every depth (Huang et al. 2017; Hayou et al. 2021)", _claim_check)

make = PaperFigure("densenet-kernel-depth",
                   "NNGP correlation vs depth: plain, residual (1/sqrt(L)), dense connectivity "
                   "(Huang et al. 2017; Schoenholz et al. 2017)", draw_from(data, plot), claim)
