"""``teacher-student-ode``: generalization error of online SGD at d = 500 against the exact
order-parameter ODE, with the plateau and its escape (Saad & Solla 1995; Goldt et al. 2019)."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.theory import teacher_student as ts

NAME = "teacher-student-ode"


def data(quick: bool = False) -> pd.DataFrame:
    """Soft committee machine K = M = 2 (erf, lr = 0.5, second layer fixed, teacher noise 0.1),
    online SGD at N = 500 for several seeds from a slightly informed start (initial overlap
    0.05 with the teacher); each seed's ODE starts from its measured initial order parameters.
    Rows: ``source`` (``sgd``/``ode``), ``seed, time, eg``. The fall, the plateau, its escape
    and the noise floor all agree within the O(1/sqrt N) fluctuations. (From an uninformed start
    the escape is seeded by SGD noise as much as by the initial weights, and single runs escape
    at random times; see :func:`dynkit.theory.teacher_student.simulate`.)"""
    seeds, t_max = (2, 150.0) if quick else (5, 250.0)
    times = np.linspace(0, t_max, int(t_max / 2.5) + 1)
    kw = {"lr": 0.5, "lr_v": 0.0, "noise": 0.1, "times": times}
    sim = ts.simulate(jax.random.PRNGKey(0), dim=500, student=2, teacher=2, seeds=seeds,
                      init_overlap=0.05, **kw)
    frames = [sim.history[["seed", "time", "eg"]].assign(source="sgd")]
    for s, s0 in enumerate(tqdm(sim.initial, desc="teacher-student-ode", unit="ODE")):
        frames.append(ts.ode(s0, **kw)[["time", "eg"]].assign(seed=s, source="ode"))
    return pd.concat(frames, ignore_index=True)


def plot(df: pd.DataFrame):
    with style():
        fig, axes = new_figure(1, 1)
        ax = axes[0, 0]
        for (source, seed), g in df.groupby(["source", "seed"]):
            ax.semilogy(g["time"], g["eg"], "-" if source == "ode" else ".",
                        color=f"C{seed}", label=f"{source} seed {seed}", ms=3)
        ax.set_xlabel("t = steps / N")
        ax.set_ylabel("generalization error")
        ax.set_title("online SGD (N = 500) vs ODE")
        ax.legend(fontsize=6)
        fig.tight_layout()
    return fig


def _claim_check(df):
    eg = df.pivot(index="time", columns=["source", "seed"], values="eg")
    log_ratio = np.log(eg["sgd"] / eg["ode"])
    ode = eg["ode"].mean(axis=1)
    plateau = ode[(ode.index >= 10) & (ode.index <= 30)]
    return ({"max |log(eps_sgd/eps_ode)|": np.abs(log_ratio).to_numpy().max(),
             "plateau max/min": plateau.max() / plateau.min(),
             "final / plateau": ode.iloc[-1] / plateau.min()},
            {"every SGD run follows its ODE (|log ratio| <= 0.3)":
             log_ratio.notna().all().all() and np.abs(log_ratio).to_numpy().max() <= 0.3,
             "a plateau (flat within 10%, > 0.01)": plateau.max() / plateau.min() < 1.1
             and plateau.min() > 0.01,
             "and its escape (< 0.3 x plateau)": ode.iloc[-1] < 0.3 * plateau.min()})


claim = Claim("online SGD at d=500 follows the order-parameter ODE through the plateau and its "
              "escape (Saad & Solla 1995)", _claim_check)

make = PaperFigure(NAME, "teacher-student online SGD at d=500 follows the order-parameter ODE "
                         "through the plateau and its escape (Saad & Solla 1995; Goldt et al. "
                         "2019)",
                   draw_from(data, plot), claim)
