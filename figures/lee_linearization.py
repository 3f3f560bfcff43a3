"""``lee-linearization``: a wide network trained by gradient descent stays close to its
linearization at initialization, with an RMSE gap that shrinks like ``1/sqrt(width)`` (Lee et
al. 2019, "Wide neural networks of any depth evolve as linear models under gradient descent",
Fig. 1 and Theorem 2.1).

For each width an MLP in NTK parameterization and its first-order Taylor model at
initialization

    f_lin(θ, x) = f(θ0, x) + ∂f(θ0, x)/∂θ · (θ − θ0)

are trained side by side from the same ``θ0`` by full-batch gradient descent with the same small
learning rate on the MSE ``(1/2n) Σ_i |f(x_i) − y_i|²`` (one-hot digit labels). The figure
shows ``RMSE_t = sqrt(mean_{x, a} (f_a(θ_t, x) − f_lin,a(θ^lin_t, x))²)`` on test inputs against
width (end of training) and against step.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.data import load
from dynkit.errors import InvalidArgumentError
from dynkit.figures.claims import Claim, resolve_size
from dynkit.figures.common import PaperFigure, draw_from, new_figure, paper_from, style
from dynkit.models import mlp

__all__ = ["NAME", "claim", "data", "final_rmse", "make", "plot", "settings", "train_pair",
           "width_slope"]

NAME = "lee-linearization"


def settings(quick: bool = False, size: str | None = None) -> dict:
    """Sizes of the experiment (``size`` overrides ``quick``): quick = one hidden layer, 3
    widths, 2 seeds, 300 steps; full = two hidden layers, widths 64-2048, 5 seeds, 2000 steps
    (width 4096 alone took over 30 minutes on 2 CPU cores); paper = widths up to 8192, as in
    Lee et al.'s Fig. 1 (a GPU)."""
    size = resolve_size(quick, size)
    if size == "quick":
        return {"widths": (64, 256, 1024), "depth": 1, "seeds": (0, 1), "steps": 300,
                "records": 10, "n_train": 128, "n_test": 128, "lr": 0.5}
    widths = (64, 128, 256, 512, 1024, 2048) + ((4096, 8192) if size == "paper" else ())
    return {"widths": widths, "depth": 2, "seeds": (0, 1, 2, 3, 4), "steps": 2000,
            "records": 40, "n_train": 256, "n_test": 256, "lr": 0.5}


def train_pair(model, params0, x, y, x_test, *, lr: float, steps: int, records: int):
    """Gradient descent on ``(1/2n) Σ |f − y|²`` for the network and for its linearization at
    ``params0`` (same ``lr``, same start). Returns ``(steps, rmse_test, loss_net, loss_lin)``
    recorded at ``records + 1`` evenly spaced steps (step 0 included); ``rmse_test`` is the RMS
    difference between the two models' outputs on ``x_test``."""
    if records < 1 or steps % records:
        raise InvalidArgumentError(f"steps ({steps}) must be a positive multiple of records "
                                   f"({records})")
    every = steps // records

    def f(q, xs):
        return model.apply(q, xs)

    def f_lin(q, xs):
        delta = jax.tree.map(jnp.subtract, q, params0)
        f0, df = jax.jvp(lambda p: f(p, xs), (params0,), (delta,))
        return f0 + df

    def mse(fn, q):
        return 0.5 * jnp.mean(jnp.sum((fn(q, x) - y) ** 2, axis=-1))

    def gd_step(_, carry):
        q, ql = carry
        g, gl = jax.grad(partial(mse, f))(q), jax.grad(partial(mse, f_lin))(ql)
        return (jax.tree.map(lambda p, d: p - lr * d, q, g),
                jax.tree.map(lambda p, d: p - lr * d, ql, gl))

    def observe(carry):
        q, ql = carry
        gap = f(q, x_test) - f_lin(ql, x_test)
        return jnp.sqrt(jnp.mean(gap ** 2)), mse(f, q), mse(f_lin, ql)

    @jax.jit
    def run(carry):
        def block(c, _):
            c = jax.lax.fori_loop(0, every, gd_step, c)
            return c, observe(c)

        _, obs = jax.lax.scan(block, carry, None, length=records)
        first = observe(carry)
        return [jnp.concatenate([jnp.atleast_1d(a), b]) for a, b in zip(first, obs)]

    rmse, loss_net, loss_lin = (np.asarray(v) for v in run((params0, params0)))
    return np.arange(records + 1) * every, rmse, loss_net, loss_lin


def data(quick: bool = False, size: str | None = None) -> pd.DataFrame:
    """One row per ``(width, seed, step)``: ``rmse`` (network vs linearized network on test
    inputs), ``loss_net`` and ``loss_lin`` (training MSE of each); sizes as in ``settings``."""
    s = settings(quick, size)
    ds = load("digits", seed=0)
    x = jnp.asarray(ds.x_train[: s["n_train"]], jnp.float32)
    y = jnp.asarray(np.eye(10)[ds.y_train[: s["n_train"]]], jnp.float32)
    x_test = jnp.asarray(ds.x_test[: s["n_test"]], jnp.float32)
    frames = []
    for width in tqdm(s["widths"], desc="lee-linearization", unit="width"):
        model = mlp(64, [width] * s["depth"], 10, parameterization="ntk")
        for seed in s["seeds"]:
            params0 = model.init(jax.random.PRNGKey(seed), jnp.float32)
            steps, rmse, ln, ll = train_pair(model, params0, x, y, x_test, lr=s["lr"],
                                             steps=s["steps"], records=s["records"])
            frames.append(pd.DataFrame({"width": width, "seed": seed, "step": steps,
                                        "rmse": rmse, "loss_net": ln, "loss_lin": ll}))
    return pd.concat(frames, ignore_index=True)


def final_rmse(df: pd.DataFrame) -> pd.Series:
    """Seed-averaged RMSE at the last step, indexed by width."""
    last = df[df["step"] == df["step"].max()]
    return last.groupby("width")["rmse"].mean().sort_index()


def width_slope(df: pd.DataFrame) -> float:
    """Least-squares slope of ``log RMSE`` against ``log width`` at the end of training
    (Lee et al. predict −1/2)."""
    r = final_rmse(df)
    return float(np.polyfit(np.log(r.index.to_numpy(float)), np.log(r.to_numpy()), 1)[0])


def plot(df: pd.DataFrame):
    r = final_rmse(df)
    widths = r.index.to_numpy(float)
    with style():
        fig, axes = new_figure(1, 2)
        ax = axes[0, 0]
        last = df[df["step"] == df["step"].max()]
        ax.loglog(last["width"], last["rmse"], ".", color="0.6", label="seeds")
        ax.loglog(widths, r.to_numpy(), "o-", label=f"mean (slope {width_slope(df):.2f})")
        ax.loglog(widths, r.iloc[0] * np.sqrt(widths[0] / widths), "k--", lw=0.8,
                  label="1/sqrt(width)")
        ax.set_xlabel("width")
        ax.set_ylabel("RMSE(net, linearized) on test")
        ax.set_title("end of training")
        ax.legend()
        ax = axes[0, 1]
        later = df[df["step"] > 0]   # at step 0 both models coincide (RMSE = rounding)
        mean = later.groupby(["width", "step"])["rmse"].mean().reset_index()
        for width, g in mean.groupby("width"):
            ax.plot(g["step"], g["rmse"], label=f"width {width}")
        ax.set_yscale("log")
        ax.set_xlabel("gradient-descent step")
        ax.set_ylabel("RMSE(net, linearized) on test")
        ax.set_title("during training")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    r = final_rmse(df)
    slope = width_slope(df)
    return ({f"final rmse width {w}": v for w, v in r.items()} | {"width slope": slope},
            {"the net-linearization gap shrinks with width":
             bool(np.all(np.diff(r.to_numpy()) < 0)),
             "slope about -1/2 (in (-0.9, -0.3))": -0.9 < slope < -0.3})


claim = Claim("a wide net tracks its linearization at init; the gap shrinks like width^(-1/2) "
              "(Lee et al. 2019)", _claim_check)

make = PaperFigure(NAME, "a wide net trained by GD tracks its linearization at init; the RMSE "
                         "gap shrinks like 1/sqrt(width) (Lee et al. 2019)",
                   draw_from(data, plot), claim,
                   paper=paper_from(data, plot))
