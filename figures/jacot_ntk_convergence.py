r"""``jacot-ntk-convergence``: the empirical NTK of finite networks converges to the analytic
(infinite-width) NTK as the width grows, at initialization and after training (Jacot, Gabriel &
Hongler 2018, "Neural Tangent Kernel", Fig. 1).

Networks: 4 layers (3 hidden ReLU layers of width ``n``, NTK parameterization,
:math:`\sigma_w = 1`, :math:`\sigma_b = 0.1` as Jacot's :math:`\beta`), inputs on the unit
circle :math:`x(\gamma) = (\cos\gamma, \sin\gamma)`. The figure shows
:math:`\Theta(x_0, x(\gamma))`, :math:`x_0 = (1, 0)`, for several widths and seeds, at
initialization and after full-batch gradient descent on MSE on four points of the circle,
against the analytic NTK of ``stax``; and the relative error
:math:`\|\Theta_n(x_0,\cdot) - \Theta_\infty(x_0,\cdot)\|_2/\|\Theta_\infty(x_0,\cdot)\|_2` vs
width, which falls like :math:`n^{-1/2}` (both at init and after training: in the NTK limit the
kernel does not move).

The empirical row :math:`\Theta(x_0, x) = J(x)\,J(x_0)^\top` is one gradient
:math:`v = \nabla_\theta f(\theta, x_0)` followed by one Jacobian-vector product
:math:`J(x)\,v` over all :math:`x` (no Jacobian is materialised).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import stax

__all__ = [
    "TRAIN_GAMMA",
    "TRAIN_Y",
    "circle",
    "claim",
    "data",
    "make",
    "network",
    "ntk_row",
    "plot",
    "relative_errors",
    "train",
]

W_STD, B_STD, DEPTH = 1.0, 0.1, 3
TRAIN_GAMMA = np.array([-2.2, -0.9, 0.6, 2.0])
TRAIN_Y = np.array([0.4, -0.3, 0.5, -0.2])


def network(width: int):
    """``DEPTH`` hidden ReLU layers of ``width`` and a scalar readout (NTK parameterization)."""
    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(width, W_std=W_STD, b_std=B_STD), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=W_STD, b_std=B_STD))


def circle(gamma) -> jnp.ndarray:
    """Points :math:`(\\cos\\gamma, \\sin\\gamma)` of the unit circle, shape ``(len, 2)``."""
    g = jnp.asarray(gamma, dtype=jnp.zeros(()).dtype)
    return jnp.stack([jnp.cos(g), jnp.sin(g)], axis=-1)


def ntk_row(apply_fn, params, x0, x) -> jnp.ndarray:
    r"""Empirical :math:`\Theta(x_0, x_j) = \sum_p \partial_p f(x_0)\,\partial_p f(x_j)` for a
    scalar-output network: ``jvp`` of ``f(., x)`` along ``grad f(., x0)``."""
    v = jax.grad(lambda p: apply_fn(p, x0[None])[0, 0])(params)
    return jax.jvp(lambda p: apply_fn(p, x)[:, 0], (params,), (v,))[1]


def train(apply_fn, params, x, y, lr: float, steps: int):
    r"""Full-batch gradient descent on :math:`\frac{1}{2N}\|f(X) - Y\|^2`, ``N = y.size``
    (the network's outputs are reshaped to ``y``'s shape)."""

    def loss(p):
        return 0.5 * jnp.mean((apply_fn(p, x).reshape(y.shape) - y) ** 2)

    def step(p, _):
        g = jax.grad(loss)(p)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), None

    return jax.lax.scan(step, params, None, length=steps)[0]


def data(quick: bool = False) -> pd.DataFrame:
    """One row per (phase, width, seed, gamma): the empirical NTK ``ntk`` and the analytic
    ``ntk_analytic`` of :math:`\\Theta(x_0, x(\\gamma))`, plus the final training loss."""
    widths = [64, 256, 1024] if quick else [64, 256, 1024, 4096]
    seeds = 3 if quick else 10
    steps = 200
    gamma = np.linspace(-np.pi, np.pi, 49 if quick else 121)
    x, x0 = circle(gamma), circle([0.0])[0]
    x_train, y_train = circle(TRAIN_GAMMA), jnp.asarray(TRAIN_Y, dtype=x.dtype)
    _, _, kernel_fn = network(1)
    analytic = np.asarray(kernel_fn(x0[None], x, "ntk"))[0]
    # gradient flow is stable for lr < 2 N / lambda_max(Theta_train)
    lam = float(np.linalg.eigvalsh(np.asarray(kernel_fn(x_train, None, "ntk")))[-1])
    lr = len(TRAIN_Y) / lam
    rows = []
    for n in tqdm(widths, desc="jacot-ntk-convergence", unit="width"):
        init_fn, apply_fn, _ = network(n)
        row_fn = jax.jit(lambda p, apply_fn=apply_fn: ntk_row(apply_fn, p, x0, x))
        train_fn = jax.jit(lambda p, apply_fn=apply_fn: train(apply_fn, p, x_train, y_train, lr,
                                                              steps))
        for seed in range(seeds):
            _, params = init_fn(jax.random.PRNGKey(seed), x.shape)
            trained = train_fn(params)
            final = float(0.5 * jnp.mean((apply_fn(trained, x_train)[:, 0] - y_train) ** 2))
            for phase, p in (("init", params), ("trained", trained)):
                emp = np.asarray(row_fn(p))
                rows += [{"phase": phase, "width": n, "seed": seed, "gamma": g, "ntk": e,
                          "ntk_analytic": a, "train_loss": final if phase == "trained" else None}
                         for g, e, a in zip(gamma, emp, analytic)]
    return pd.DataFrame(rows)


def relative_errors(df: pd.DataFrame) -> pd.DataFrame:
    """:math:`\\|\\Theta_n - \\Theta_\\infty\\|_2 / \\|\\Theta_\\infty\\|_2` over the circle,
    one row per (phase, width, seed)."""
    sq = df.assign(d2=(df["ntk"] - df["ntk_analytic"]) ** 2, a2=df["ntk_analytic"] ** 2)
    g = sq.groupby(["phase", "width", "seed"])[["d2", "a2"]].sum()
    return (np.sqrt(g["d2"] / g["a2"])).rename("rel_error").reset_index()


def plot(df: pd.DataFrame):
    """Left, middle: :math:`\\Theta(x_0, x(\\gamma))` at init / after training for the smallest
    and largest width (thin lines: seeds) and the analytic NTK. Right: relative error vs width."""
    lo, hi = int(df["width"].min()), int(df["width"].max())
    with style():
        fig, axes = new_figure(1, 3, figsize=(12.6, 3.4))
        for ax, phase in zip(axes[0, :2], ("init", "trained")):
            d = df[df["phase"] == phase]
            for color, n in (("C1", lo), ("C0", hi)):
                for seed, g in d[d["width"] == n].groupby("seed"):
                    ax.plot(g["gamma"], g["ntk"], color=color, lw=0.8, alpha=0.7,
                            label=f"n = {n}" if seed == 0 else None)
            first = d[(d["width"] == hi) & (d["seed"] == 0)]
            ax.plot(first["gamma"], first["ntk_analytic"], "k--", lw=1.6, label="n = ∞ (stax)")
            ax.set_xlabel(r"$\gamma$")
            ax.set_ylabel(r"$\Theta(x_0, x(\gamma))$")
            if phase == "trained":
                for g0 in TRAIN_GAMMA:
                    ax.axvline(g0, color="0.6", lw=0.8, ls=":")
            ax.set_title("at initialization" if phase == "init"
                         else "after training (dotted: training inputs)")
            ax.legend()
        ax = axes[0, 2]
        err = relative_errors(df)
        for i, (phase, g) in enumerate(err.groupby("phase")):
            ax.plot(g["width"], g["rel_error"], ".", color=f"C{i}", alpha=0.4)
            m = g.groupby("width")["rel_error"].mean()
            ax.plot(m.index, m.values, "o-", color=f"C{i}", label=phase)
        w = np.array(sorted(err["width"].unique()), dtype=float)
        ref = err[err["width"] == w[0]]["rel_error"].mean()
        ax.plot(w, ref * np.sqrt(w[0] / w), "k:", label=r"$\propto n^{-1/2}$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel("relative error vs analytic NTK")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    err = relative_errors(df).groupby(["phase", "width"])["rel_error"].mean().unstack("width")
    measured, checks = {}, {}
    for phase, row in err.iterrows():
        measured[f"{phase} rel error smallest width"] = row.iloc[0]
        measured[f"{phase} rel error largest width"] = row.iloc[-1]
        checks[f"{phase}: error falls with width"] = bool(np.all(np.diff(row.to_numpy()) < 0))
        checks[f"{phase}: largest width < 0.5 x smallest"] = row.iloc[-1] < 0.5 * row.iloc[0]
    return measured, checks


claim = Claim("the empirical NTK converges to the analytic NTK as width grows, at init and "
              "after training (Jacot et al. 2018)", _claim_check)

make = PaperFigure("jacot-ntk-convergence", "empirical NTK -> analytic NTK on the unit circle, "
                                            "at init and after training (Jacot et al. 2018)",
                   draw_from(data, plot), claim)
