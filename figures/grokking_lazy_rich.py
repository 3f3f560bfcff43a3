"""``grokking-lazy-rich``: grokking as the transition from lazy to rich training (Kumar,
Bordelon, Gershman & Pehlevan 2024, ICLR, Figs. 1-2).

Polynomial regression: Gaussian inputs ``x ~ N(0, I_D)``, target the normalized second
Hermite polynomial of one direction, ``y = ((β·x)² − 1)/√2``, ``P`` training points. A
two-layer network with output scale ``α`` and a weakly quadratic activation

    f(x) = α/√m Σ_i a_i φ(w_i·x/√D),   φ(h) = h + (ε/2) h²,

is trained, centered (``f − f_{θ0}``, so it starts at zero), by full-batch gradient descent on
``(1/2P) Σ (f − y)²`` with raw step ``lr/α²`` (time ``t = step · lr``; the lazy/rich knob of
Chizat et al. 2019). With small ``ε`` the initial NTK is mostly linear, misaligned with the
quadratic target, and with ``P < D(D+1)/2`` kernel regression cannot learn the target: lazy
training (large ``α``) memorizes the training set while the test loss stays high. Feature
learning, whose rate falls with ``α``, finds ``β`` later and the test loss drops: a delay
between train and test loss that grows with ``α``. The centered kernel-target alignment of
the NTK on the training set (Cortes et al. 2012) is tracked along training.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.analyses.ntk_dynamics import centered_alignment
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory.empirical import ntk_fn

__all__ = [
    "NAME",
    "claim",
    "data",
    "first_time_below",
    "log_blocks",
    "make",
    "network",
    "plot",
    "settings",
    "task",
    "train",
]

NAME = "grokking-lazy-rich"


def settings(quick: bool) -> dict:
    """Sizes: quick = D 30, P 300, width 128, 5 values of α, time 10⁴ (float32)."""
    if quick:
        return {"dim": 30, "n_train": 300, "n_test": 1000, "width": 128, "eps": 0.2,
                "lr": 1.0, "steps": 10_000, "records": 30, "alphas": (0.3, 1.0, 3.0, 10.0, 30.0)}
    return {"dim": 40, "n_train": 400, "n_test": 2000, "width": 1024, "eps": 0.2, "lr": 0.5,
            "steps": 100_000, "records": 60,
            "alphas": (0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)}


def task(dim: int, n_train: int, n_test: int, seed: int = 0):
    """``(x_train, y_train, x_test, y_test)`` of ``y = ((β·x)² − 1)/√2``, ``x ~ N(0, I)``."""
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(dim)
    beta /= np.linalg.norm(beta)
    x = rng.standard_normal((n_train + n_test, dim))
    y = ((x @ beta) ** 2 - 1) / math.sqrt(2)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def network(alpha: float, eps: float, width: int, dim: int):
    """``apply(params, x) = α/√m Σ a_i φ(w_i·x/√D)`` with ``φ(h) = h + ε h²/2``."""
    def apply(params, x):
        h = x @ params["w"].T / math.sqrt(dim)
        return alpha / math.sqrt(width) * ((h + 0.5 * eps * h ** 2) @ params["a"])
    return apply


def log_blocks(steps: int, records: int) -> np.ndarray:
    """Record steps, roughly log-spaced in ``[1, steps]`` (distinct integers, last = steps)."""
    return np.unique(np.round(np.geomspace(1, steps, records)).astype(int))


def train(alpha: float, s: dict, data, seed: int = 1):
    """Gradient descent (float32) of the centered network; returns ``(record steps, stacked
    params, apply)``, params at step 0 and at the ``log_blocks`` steps."""
    x, y = jnp.asarray(data[0], jnp.float32), jnp.asarray(data[1], jnp.float32)
    apply = network(alpha, s["eps"], s["width"], s["dim"])
    kw, ka = jax.random.split(jax.random.PRNGKey(seed))
    p0 = {"w": jax.random.normal(kw, (s["width"], s["dim"]), jnp.float32),
          "a": jax.random.normal(ka, (s["width"],), jnp.float32)}
    f0 = apply(p0, x)
    eta = s["lr"] / alpha ** 2
    grad = jax.grad(lambda p: 0.5 * jnp.mean((apply(p, x) - f0 - y) ** 2))
    pts = log_blocks(s["steps"], s["records"])
    lengths = jnp.asarray(np.diff(np.concatenate([[0], pts])))

    @jax.jit
    def run(p):
        def block(p, n):
            p = jax.lax.fori_loop(0, n, lambda _, q: jax.tree.map(
                lambda a, g: a - eta * g, q, grad(q)), p)
            return p, p
        return jax.lax.scan(block, p, lengths)[1]

    stacked = run(p0)
    stacked = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), p0, stacked)
    return np.concatenate([[0], pts]), stacked, apply


def data(quick: bool = False) -> pd.DataFrame:
    """One row per ``(alpha, step)``: ``time = step · lr``, ``train_loss``, ``test_loss``
    (``(1/2n) Σ (f − y)²``), ``alignment`` (centered NTK-target alignment on the training set)
    and ``rel_dist`` (``‖W_t − W_0‖/‖W_0‖`` of the first layer)."""
    s = settings(quick)
    xtr, ytr, xte, yte = task(s["dim"], s["n_train"], s["n_test"])
    # The NTK of the network with scale α is α² times that of α = 1 and the alignment is
    # scale invariant, so one kernel function (one compilation) serves every α.
    unit = network(1.0, s["eps"], s["width"], s["dim"])
    kernel = ntk_fn(lambda p, x: unit(p, x)[:, None], method="jacobian")
    frames = []
    for alpha in tqdm(s["alphas"], desc="grokking-lazy-rich", unit="alpha"):
        steps, stacked, apply = train(alpha, s, (xtr, ytr))
        p0 = jax.tree.map(lambda a: a[0], stacked)

        def centered(p, x, apply=apply, p0=p0):
            return apply(p, x) - apply(p0, x)

        def loss(p, x, y, centered=centered):
            return 0.5 * jnp.mean((centered(p, x) - y) ** 2)

        tr = np.asarray(jax.vmap(lambda p: loss(p, xtr, ytr))(stacked))
        te = np.asarray(jax.vmap(lambda p: loss(p, xte, yte))(stacked))
        w = np.asarray(stacked["w"])
        rel = np.linalg.norm((w - w[0]).reshape(len(w), -1), axis=1) / np.linalg.norm(w[0])
        align = [centered_alignment(np.asarray(kernel(xtr, None, jax.tree.map(
            lambda a, i=i: a[i], stacked))), ytr) for i in range(len(steps))]
        frames.append(pd.DataFrame({"alpha": alpha, "step": steps, "time": steps * s["lr"],
                                    "train_loss": tr, "test_loss": te,
                                    "alignment": align, "rel_dist": rel}))
    return pd.concat(frames, ignore_index=True)


def first_time_below(df: pd.DataFrame, column: str, fraction: float) -> pd.Series:
    """Per ``alpha``: the first time ``column`` falls below ``fraction`` × its value at 0
    (``inf`` if never)."""
    out = {}
    for alpha, g in df.groupby("alpha"):
        g = g.sort_values("time")
        below = g[g[column] < fraction * g[column].iloc[0]]
        out[alpha] = below["time"].iloc[0] if len(below) else np.inf
    return pd.Series(out).sort_index()


def plot(df: pd.DataFrame):
    alphas = sorted(df["alpha"].unique())
    colors = dict(zip(alphas, np.linspace(0.1, 0.85, len(alphas))))
    cmap = plt.get_cmap("viridis")
    with style():
        fig, axes = new_figure(1, 3)
        for alpha, g in df[df["time"] > 0].groupby("alpha"):
            c = cmap(colors[alpha])
            axes[0, 0].loglog(g["time"], g["train_loss"], "--", color=c)
            axes[0, 0].loglog(g["time"], g["test_loss"], "-", color=c, label=f"α = {alpha:g}")
            axes[0, 1].semilogx(g["time"], g["alignment"], color=c, label=f"α = {alpha:g}")
        axes[0, 0].set_xlabel("time (step × lr)")
        axes[0, 0].set_ylabel("loss (dashed: train, solid: test)")
        axes[0, 0].set_title("train vs test loss")
        axes[0, 0].legend()
        axes[0, 1].set_xlabel("time (step × lr)")
        axes[0, 1].set_ylabel("centered NTK-target alignment")
        axes[0, 1].set_title("kernel alignment (train set)")
        ax = axes[0, 2]
        t_train = first_time_below(df, "train_loss", 0.1)
        t_test = first_time_below(df, "test_loss", 0.5)
        tmax = df["time"].max()
        ax.loglog(t_train.index, t_train.clip(upper=tmax), "s--", label="train loss < 10% of start")
        ax.loglog(t_test.index, t_test.clip(upper=tmax), "o-", label="test loss < 50% of start")
        ax.axhline(tmax, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("output scale α")
        ax.set_ylabel("time (capped at the horizon)")
        ax.set_title("delay grows with α (lazy)")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    t_test = first_time_below(df, "test_loss", 0.5)
    finite = t_test[np.isfinite(t_test)]
    g = df.sort_values("time").groupby("alpha")
    first, last = g.first(), g.last()
    return ({f"alpha={a:g} time test loss halves": t for a, t in t_test.items()},
            {"generalization time grows with alpha": len(finite) >= 3
             and bool(np.all(np.diff(finite.to_numpy()) > 0)),
             "the two largest alphas never generalize": bool(np.all(np.isinf(t_test.iloc[-2:]))),
             "the smallest alpha generalizes (test loss < 0.2 x start)":
             last["test_loss"].iloc[0] < 0.2 * first["test_loss"].iloc[0]})


claim = Claim("the larger the output scale alpha, the longer test loss lags train loss; lazy "
              "nets memorize (Kumar et al. 2024)", _claim_check)

make = PaperFigure(NAME, "grokking as the lazy-to-rich transition: with output scale alpha "
                         "the test loss lags the train loss longer (Kumar et al. 2024)",
                   draw_from(data, plot), claim)
