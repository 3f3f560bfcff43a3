r"""``nngp-finite-width``: the output of a finite one-hidden-layer network deviates from the NNGP
Gaussian by a 4th-Hermite term whose size, the excess kurtosis, scales as 1/width
(Antognini 2019, "Finite size corrections for neural network Gaussian processes").

For :math:`f(x) = \frac{\sigma_v}{\sqrt n}\sum_{i=1}^n v_i\,\phi(h_i(x))` with i.i.d. Gaussian
pre-activations :math:`h_i` and readout weights :math:`v_i\sim N(0,1)` (no readout bias), ``f``
given the hidden layer is Gaussian with variance :math:`\sigma_v^2 S`,
:math:`S = \frac1n\sum_i\phi(h_i)^2`. So ``f`` is a scale mixture of Gaussians with

.. math:: \kappa_4 = \frac{E f^4}{(E f^2)^2} - 3
          = \frac{3\,\mathrm{Var}\,\phi(h)^2}{n\,(E\phi(h)^2)^2},

and its density is :math:`N(f;0,K)\,[1 + \frac{\kappa_4}{24}He_4(f/\sqrt K)] + O(n^{-2})`,
``K`` the NNGP variance. For ReLU :math:`\kappa_4 = 15/n` exactly. The figure samples many
networks from ``stax`` ``init_fn`` (``vmap`` over keys), estimates the excess kurtosis of
``f(x)`` at one input for each width and fits the slope of log kurtosis vs log width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import FigureResult, PaperFigure, new_figure, style
from dynkit.theory import stax
from dynkit.theory.finite_width import output_excess_kurtosis

__all__ = [
    "HIST_WIDTHS",
    "X",
    "claim",
    "data",
    "draw",
    "excess_kurtosis",
    "make",
    "network",
    "plot",
    "sample_outputs",
    "simulate",
    "theory_kurtosis",
]

W_STD, B_STD = 1.5, 0.05
X = np.array([[0.6, 0.8]])  # one input on the unit circle


def network(width: int):
    """One-hidden-layer ReLU network in NTK parameterization, no readout bias."""
    return stax.serial(stax.Dense(width, W_std=W_STD, b_std=B_STD), stax.Relu(),
                       stax.Dense(1, W_std=W_STD))


def theory_kurtosis(width: int, activation=jax.nn.relu, degree: int = 200) -> float:
    r""":math:`3\,\mathrm{Var}\,\phi(h)^2 / (n (E\phi(h)^2)^2)`, ``h ~ N(0, q)`` with
    :math:`q = \sigma_w^2\|x\|^2/d + \sigma_b^2` at the figure's input
    (:func:`dynkit.theory.finite_width.output_excess_kurtosis`; 15/n for ReLU)."""
    q = W_STD**2 * float(np.sum(X**2)) / X.shape[1] + B_STD**2
    return output_excess_kurtosis(width, q, activation, degree)


def sample_outputs(width: int, draws: int, seed: int = 0, chunk: int = 20000) -> np.ndarray:
    """``f(x)`` of ``draws`` independent networks of one width (``init_fn``/``apply_fn``
    ``vmap``-ed over keys, ``lax.map`` over chunks to bound memory)."""
    init_fn, apply_fn, _ = network(width)
    x = jnp.asarray(X, dtype=jnp.zeros(()).dtype)

    def one(key):
        _, params = init_fn(key, x.shape)
        return apply_fn(params, x)[0, 0]

    chunk = min(chunk, draws)
    n_chunks = -(-draws // chunk)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_chunks * chunk).reshape(n_chunks, chunk,
                                                                                -1)
    out = jax.jit(lambda k: jax.lax.map(jax.vmap(one), k))(keys)
    return np.asarray(out).ravel()[:draws]


def excess_kurtosis(f: np.ndarray) -> float:
    """Sample :math:`E f^4/(E f^2)^2 - 3` (the mean of ``f`` is 0 by symmetry)."""
    f = np.asarray(f, dtype=np.float64)
    m2 = np.mean(f**2)
    return float(np.mean(f**4) / m2**2 - 3.0)


HIST_WIDTHS = (16, 64)


def simulate(quick: bool = False) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """The table of :func:`data` and the raw outputs of the widths in ``HIST_WIDTHS``."""
    widths = [4, 8, 16, 32, 64] if quick else [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    draws = 250_000 if quick else 4_000_000
    _, _, kernel_fn = network(1)
    k_nngp = float(kernel_fn(jnp.asarray(X), None, "nngp")[0, 0])
    rows, samples = [], {}
    for i, n in enumerate(tqdm(widths, desc="nngp-finite-width", unit="width")):
        f = sample_outputs(n, draws, seed=i)
        if n in HIST_WIDTHS:
            samples[n] = f
        blocks = [excess_kurtosis(b) for b in np.array_split(f, 10)]
        rows.append({"width": n, "draws": draws, "excess_kurtosis": excess_kurtosis(f),
                     "kurtosis_se": float(np.std(blocks, ddof=1) / np.sqrt(len(blocks))),
                     "theory_kurtosis": theory_kurtosis(n), "nngp_variance": k_nngp,
                     "sample_variance": float(np.mean(f**2))})
    df = pd.DataFrame(rows)
    slope, _ = np.polyfit(np.log(df["width"]), np.log(np.abs(df["excess_kurtosis"])), 1)
    df["fitted_slope"] = slope
    return df, samples


def data(quick: bool = False) -> pd.DataFrame:
    """One row per width: excess kurtosis (Monte Carlo, standard error from the spread over 10
    blocks of draws), its exact value, the NNGP variance and the sample variance of ``f(x)``,
    and the fitted slope of log |excess kurtosis| vs log width (theory: -1)."""
    return simulate(quick)[0]


def _gauss(u):
    return np.exp(-u**2 / 2) / np.sqrt(2 * np.pi)


def _he4(u):
    return u**4 - 6 * u**2 + 3


def plot(df: pd.DataFrame, samples: dict[int, np.ndarray] | None = None):
    r"""Left: log-log excess kurtosis vs width with the exact 1/n law. Right (if ``samples``,
    width -> outputs): ``n`` times the deviation of the standardized output density from the NNGP
    Gaussian, against the 4th-Hermite prediction :math:`n\frac{\kappa_4}{24}He_4(u)\varphi(u)`
    (width-independent at leading order)."""
    with style():
        fig, axes = new_figure(1, 2 if samples else 1)
        ax = axes[0, 0]
        ax.errorbar(df["width"], np.abs(df["excess_kurtosis"]), yerr=2 * df["kurtosis_se"],
                    marker="o", ls="none", label="Monte Carlo (±2 se)")
        ax.plot(df["width"], df["theory_kurtosis"], "k--",
                label=r"$3\,\mathrm{Var}\,\phi^2/(n\,(E\phi^2)^2)$")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel("excess kurtosis of f(x)")
        ax.set_title(f"fitted slope {df['fitted_slope'].iloc[0]:.3f} (theory −1)")
        ax.legend()
        if samples:
            ax = axes[0, 1]
            edges = np.linspace(-4, 4, 41)
            mid = (edges[1:] + edges[:-1]) / 2
            scale = np.sqrt(df["nngp_variance"].iloc[0])
            for i, (n, f) in enumerate(samples.items()):
                hist, _ = np.histogram(f / scale, bins=edges)
                dens = hist / (len(f) * np.diff(edges))
                ax.plot(mid, n * (dens - _gauss(mid)), "o", ms=3, color=f"C{i}",
                        label=f"width {n} (Monte Carlo)")
            grid = np.linspace(-4, 4, 400)
            n_kappa = float((df["width"] * df["theory_kurtosis"]).iloc[0])
            ax.plot(grid, n_kappa / 24 * _he4(grid) * _gauss(grid), "k-",
                    label=r"$n\,\frac{\kappa_4}{24}He_4(u)\,\varphi(u)$")
            ax.set_xlabel(r"$u = f(x)/\sqrt{K_{\rm NNGP}}$")
            ax.set_ylabel(r"$n\,[p(u) - \varphi(u)]$")
            ax.set_title("deviation from the NNGP Gaussian")
            ax.legend()
        fig.tight_layout()
    return fig


def draw(quick: bool = False) -> FigureResult:
    """Simulate (``quick``: the CPU-minute sizes); the figure and its table."""
    df, samples = simulate(quick)
    return FigureResult(plot(df, samples), df)


def _claim_check(df):
    slope, _ = np.polyfit(np.log(df["width"]), np.log(np.abs(df["excess_kurtosis"])), 1)
    return ({"kurtosis slope": slope},
            {"kurtosis slope -1 +- 0.1": abs(slope + 1.0) < 0.1})


claim = Claim("the excess kurtosis of the output falls like 1/width: log-log slope -1 +- 0.1 "
              "(Antognini 2019)", _claim_check)

make = PaperFigure("nngp-finite-width", "finite-width output distribution: 4th-Hermite "
                                        "(kurtosis) correction ~ 1/width (Antognini 2019)", draw,
                   claim)
