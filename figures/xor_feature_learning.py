"""``xor-feature-learning``: minibatch SGD of a two-layer ReLU net on ``y = -x_1 x_2`` over the
hypercube ``{+-1}^d``. A signal-finding phase (loss flat, the weight on coordinates 1, 2 grows
from ~2/d) is followed by a signal-heavy phase (weights concentrate on the signal coordinates
and the loss falls) (Glasgow 2023, "SGD finds then tunes features in two-layer neural networks
with near-optimal sample complexity: a case study in the XOR problem")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import two_layer as tl

__all__ = ["NAME", "claim", "data", "make", "plot"]

NAME = "xor-feature-learning"


def _hypercube(key, n: int, d: int):
    x = jnp.where(jax.random.bernoulli(key, 0.5, (n, d)), 1.0, -1.0)
    return x, -x[:, 0] * x[:, 1]


def data(quick: bool = False) -> pd.DataFrame:
    """Online minibatch SGD (batch 32, logistic loss, gamma = 1, bias, init_scale 0.1).
    Rows: ``step, time, test_loss, test_error, signal`` where ``signal`` is the mean over
    neurons of ``(w_1^2 + w_2^2) / |w|^2`` (2/d at init, -> 1 when signal-heavy)."""
    d, m, steps = (20, 100, 3000) if quick else (50, 400, 20000)
    xt, yt = _hypercube(jax.random.PRNGKey(1), 2000, d)
    net = tl.TwoLayer(width=m, gamma=1.0, bias=True)
    p = tl.init(jax.random.PRNGKey(2), net, d, init_scale=0.1)
    tr = tl.online_sgd(p, net, lambda k, b: _hypercube(k, b, d), lr=0.01, steps=steps,
                       batch_size=32, key=jax.random.PRNGKey(3), x=xt, y=yt,
                       record_every=steps // 50, loss="logistic")
    w = np.asarray(tr.params["w"])
    signal = np.mean(np.sum(w[..., :2] ** 2, -1) / np.sum(w ** 2, -1), -1)
    err = np.asarray(jax.vmap(lambda q: jnp.mean(tl.apply(q, net, xt) * yt <= 0))(tr.params))
    h = tr.history
    return pd.DataFrame({"step": h["step"], "time": h["time"], "test_loss": h["train_loss"],
                         "test_error": err, "signal": signal, "d": d})


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 2)
        ax = axes[0, 0]
        ax.plot(df["step"], df["test_loss"], label="test loss")
        ax.plot(df["step"], df["test_error"], label="test error")
        ax.set_xlabel("SGD step")
        ax.legend()
        ax = axes[0, 1]
        ax.semilogy(df["step"], df["signal"], label="signal weight fraction")
        ax.axhline(2 / df["d"].iloc[0], color="k", ls="--", lw=0.8, label="2/d (isotropic)")
        ax.set_xlabel("SGD step")
        ax.legend()
        fig.tight_layout()
    return fig


def _claim_check(df):
    d = df["d"].iloc[0]
    rising = df[df["test_loss"] > 0.6]
    return ({"signal start": df["signal"].iloc[0], "signal end": df["signal"].iloc[-1],
             "test error end": df["test_error"].iloc[-1],
             "signal max while loss > 0.6": rising["signal"].max()},
            {"isotropic start (signal < 3/d)": df["signal"].iloc[0] < 3 / d,
             "signal-heavy end (> 0.5)": df["signal"].iloc[-1] > 0.5,
             "test error < 5%": df["test_error"].iloc[-1] < 0.05,
             "signal doubles while the loss is near log 2":
             rising["signal"].max() > 2 * df["signal"].iloc[0]})


claim = Claim("SGD on XOR first concentrates weights on the signal coordinates, then the loss "
              "falls (Glasgow 2023)", _claim_check)

make = PaperFigure(NAME, "XOR on the hypercube: SGD first finds the signal coordinates, then "
                         "the loss falls (Glasgow 2023)",
                   draw_from(data, plot), claim)
