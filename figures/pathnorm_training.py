"""``pathnorm-training``: L^1, L^2, L^4 path-norms and the path-norm generalization bound
across training, against the product of layer operator norms (Gonon, Brisebarre, Riccietti &
Gribonval, ICLR 2024, "A path-norm toolkit for modern networks", Sec. 2-4).

A network is trained on the sklearn digits (pixels in ``[0, 1]``, so the input bound of the
bound is ``B = 1``) and, at every saved step, ``analyses.pathnorm.path_norm`` gives
``||Phi(theta)||_q`` for ``q = 1, 2, 4``, ``analyses.pathnorm_bound.pathnorm_bound`` the
Theorem 3.1 bound ``4 C B / sqrt(n) ||Phi(theta)||_1`` on the expected generalization gap of
the cross-entropy loss (plotted with the measured gap, test minus train loss), and
``operator_norm_product`` the classic ``prod_l ||A_l||_2``.

Invariance demo: the final network's ``rescaled`` copy multiplies one hidden ReLU unit's
incoming weights and bias by ``lam`` and its outgoing weights by ``1 / lam``. The function
(logits) and the path-norms are unchanged; the product of operator norms is not. Those rows
have ``variant == "rescaled"`` in the CSV (``max_logit_change`` records the function check).

Quick mode trains the MLP only; full mode an MLP and a CIFAR ResNet-20 (width 16, on the
8x8x1 digit images). In BatchNorm networks the step-0 checkpoint folds BatchNorm with its
initial running statistics (mean 0, variance 1), which the first steps then replace by the
data's: their path-norms at step 0 are not those of a data-calibrated network.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import dynkit as dk
from dynkit.analyses.pathnorm import path_norm
from dynkit.analyses.pathnorm_bound import operator_norm_product, pathnorm_bound
from dynkit.checkpoints import iterate
from dynkit.errors import InvalidArgumentError
from dynkit.figures.claims import Claim
from dynkit.figures.common import PaperFigure, draw_from, new_figure, style
from dynkit.train import fit

__all__ = [
    "COLUMNS",
    "QS",
    "Setup",
    "claim",
    "data",
    "make",
    "network_series",
    "norm_rows",
    "plot",
    "rescale_unit",
    "setups",
]

QS = (1.0, 2.0, 4.0)
COLUMNS = ["network", "variant", "step", "quantity", "q", "value", "log_value"]


@dataclass(frozen=True)
class Setup:
    """One network of the figure: how it is built and trained, and which hidden unit the
    invariance demo rescales (``into`` feeds, through one ReLU, only ``out_of``)."""

    name: str
    model: object
    image: bool
    steps: int
    save_every: int
    optimizer: str
    lr: float
    into: str
    out_of: str


def setups(quick: bool) -> list[Setup]:
    """Quick: MLP 64-128-128-10, 600 SGD steps. Full: MLP 64-512-512-10 (4000 steps) and
    ResNet-20 (width 16, 2000 steps, momentum 0.9)."""
    if quick:
        return [Setup("MLP", dk.models.mlp(64, [128, 128], 10), False, 600, 50, "sgd", 0.1,
                      "fc0", "fc1")]
    resnet = dk.models.build({"arch": "resnet20", "input_shape": [8, 8, 1], "num_classes": 10,
                              "width": 16})
    return [
        Setup("MLP", dk.models.mlp(64, [512, 512], 10), False, 4000, 200, "sgd", 0.1,
              "fc0", "fc1"),
        Setup("ResNet-20", resnet, True, 2000, 100, "momentum", 0.05,
              "layer1.0.bn1", "layer1.0.conv2"),
    ]


def rescale_unit(model, params, into: str, out_of: str, unit: int, lam: float) -> dict:
    """Copy of ``params`` where hidden unit ``unit`` (output channel of node ``into``) is
    rescaled: ``into``'s weights and bias for that unit (dense/conv ``w[..., unit]``,
    ``b[unit]``; BatchNorm ``scale[unit]``, ``bias[unit]``) times ``lam > 0``, the incoming
    weights ``w[..., unit, :]`` of ``out_of`` times ``1 / lam``. ``into`` must feed only a ReLU
    that feeds only ``out_of``, so by positive homogeneity the function is unchanged, and so
    are all path-norms (Gonon et al. 2024, Sec. 2). The two touched nodes' arrays come back as
    float64 numpy arrays, so the rescaling itself adds no float32 rounding."""
    if not (math.isfinite(lam) and lam > 0):
        raise InvalidArgumentError(f"rescale_unit: lam must be finite and > 0, got {lam}")
    consumers = {n.name: [c.name for c in model.nodes if n.name in c.inputs] for n in model.nodes}
    relu = consumers.get(into, [])
    if (len(relu) != 1 or model.node(relu[0]).op != "relu"
            or consumers[relu[0]] != [out_of] or model.node(out_of).op not in ("dense", "conv")):
        raise InvalidArgumentError(
            f"rescale_unit: node {into!r} must feed a single ReLU that feeds only the dense/conv "
            f"node {out_of!r}; found consumers {relu} -> "
            f"{consumers[relu[0]] if len(relu) == 1 else '?'}")
    keys = ("scale", "bias") if model.node(into).op == "batchnorm" else ("w", "b")
    new = {k: dict(v) for k, v in params.items()}
    for k in keys:
        if k in new[into]:
            new[into][k] = np.array(new[into][k], np.float64)  # exact products in float64
            new[into][k][..., unit] *= lam
    new[out_of]["w"] = np.array(new[out_of]["w"], np.float64)
    new[out_of]["w"][..., unit, :] /= lam
    return new


def _log(v: float) -> float:
    return math.log(v) if v > 0 else math.nan


def norm_rows(model, params, n_train: int) -> list[tuple]:
    """``(quantity, q, value, log_value)``: path-norms, the bound, its sharpened form (Remark
    3.1) and the operator-norm product of one parameter set."""
    pns = [path_norm(model, params, q) for q in QS]
    rows = [("pathnorm", pn.q, pn.value, pn.log_value) for pn in pns]
    b = pathnorm_bound(model, params, n_train=n_train, input_bound=1.0,
                       log_pathnorm=pns[QS.index(1.0)].log_value)
    op = operator_norm_product(model, params)
    return rows + [("bound", 1.0, b.value, b.log_value),
                   ("bound_sharpened", 1.0, b.sharpened_value, _log(b.sharpened_value)),
                   ("operator_norm_product", math.nan, op.value, op.log_value)]


def network_series(s: Setup, lam: float = 10.0, seed: int = 0) -> pd.DataFrame:
    """Train ``s`` and measure every saved checkpoint, plus the rescaled final network."""
    data = dk.data.load("digits", seed=seed, image=s.image, standardize_inputs=False)
    n = len(data.x_train)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(s.model, data, optimizer=s.optimizer, lr=s.lr, batch_size=64, steps=s.steps,
                  seed=seed, out_dir=tmp, save_every=s.save_every, progress=False)
        for ck in iterate(tmp):
            rows += [("trained", ck.step, *r) for r in norm_rows(ck.model, ck.params, n)]
    for r in res.history.itertuples():
        rows.append(("trained", r.step, f"{r.split}_loss", math.nan, r.loss, _log(r.loss)))
        rows.append(("trained", r.step, f"{r.split}_accuracy", math.nan, r.accuracy,
                     _log(r.accuracy)))
    final = int(res.history["step"].max())
    scaled = rescale_unit(s.model, res.params, s.into, s.out_of, 0, lam)
    rows += [("rescaled", final, *r) for r in norm_rows(s.model, scaled, n)]
    change = float(np.max(np.abs(np.asarray(s.model.apply(scaled, data.x_test))
                                 - np.asarray(s.model.apply(res.params, data.x_test)))))
    rows.append(("rescaled", final, "max_logit_change", math.nan, change, _log(change)))
    df = pd.DataFrame(rows, columns=COLUMNS[1:]).assign(network=s.name)
    return df[COLUMNS]


def data(quick: bool = False) -> pd.DataFrame:
    """The tidy table ``network, variant, step, quantity, q, value, log_value`` (see the
    module docstring; quick: MLP only)."""
    return pd.concat([network_series(s) for s in tqdm(setups(quick), desc="pathnorm-training",
                                                       unit="network")], ignore_index=True)


def _series(g: pd.DataFrame, quantity: str, q: float | None = None, variant="trained"):
    s = g[(g["quantity"] == quantity) & (g["variant"] == variant)]
    if q is not None:
        s = s[s["q"] == q]
    return s.sort_values("step")


def plot(df: pd.DataFrame):
    nets = list(dict.fromkeys(df["network"]))
    with style():
        fig, axes = new_figure(len(nets), 3)
        for row, net in zip(axes, nets):
            g = df[df["network"] == net]
            ax = row[0]
            for k, q in enumerate(QS):
                s, r = _series(g, "pathnorm", q), _series(g, "pathnorm", q, "rescaled")
                ax.plot(s["step"], s["value"], color=f"C{k}", marker=".", label=f"$L^{q:g}$")
                ax.plot(r["step"], r["value"], "o", mfc="none", ms=10, color=f"C{k}")
            ax.set_title(f"{net}: path-norms $\\|\\Phi(\\theta)\\|_q$", fontsize="medium")
            ax.legend(title="○ rescaled copy", fontsize="small")

            ax = row[1]
            measures = [("pathnorm", 1.0, "$L^1$ path-norm", "C0"),
                        ("pathnorm", 2.0, "$L^2$ path-norm", "C1"),
                        ("operator_norm_product", None, r"$\prod_l \|A_l\|_2$", "C3")]
            for quantity, q, label, color in measures:
                s, r = _series(g, quantity, q), _series(g, quantity, q, "rescaled")
                v0 = s["value"].iloc[0]
                ax.plot(s["step"], s["value"] / v0, color=color, marker=".", label=label)
                ax.plot(r["step"], r["value"] / v0, "o", mfc="none", ms=10, color=color)
            ax.set_title("relative to step 0 (○: rescaled unit)", fontsize="medium")
            ax.legend(fontsize="small")

            ax = row[2]
            for quantity, label, ls in (("bound", "Thm 3.1 bound", "-"),
                                        ("bound_sharpened", "Remark 3.1", "--")):
                s = _series(g, quantity)
                ax.plot(s["step"], s["value"], ls, color="C0", marker=".", label=label)
            tr, te = _series(g, "train_loss"), _series(g, "test_loss")
            gap = te.set_index("step")["value"] - tr.set_index("step")["value"]
            gap = gap[gap > 0]
            ax.plot(gap.index, gap.values, "s-", color="k", ms=3, label="test − train loss")
            ax.set_title("generalization gap: bound vs measured", fontsize="medium")
            ax.legend(fontsize="small")
            for ax in row:
                ax.set_yscale("log")
                ax.set_xlabel("step")
        fig.tight_layout()
    return fig


def _claim_check(df):
    trained, rescaled = df[df["variant"] == "trained"], df[df["variant"] == "rescaled"]
    measured, checks = {}, {}
    for q in QS:
        pn = trained[(trained["quantity"] == "pathnorm") & (trained["q"] == q)]
        pn = pn.sort_values("step")["value"].to_numpy()
        r = rescaled[(rescaled["quantity"] == "pathnorm") & (rescaled["q"] == q)]["value"]
        measured[f"L{q:g} growth"] = pn[-1] / pn[0]
        measured[f"L{q:g} rescaled/trained - 1"] = float(r.iloc[0]) / pn[-1] - 1
        checks[f"L{q:g} path-norm grows > 1.2x from init"] = pn[-1] > 1.2 * pn[0]
        checks[f"L{q:g} path-norm rescaling-invariant (1e-9)"] = (
            abs(float(r.iloc[0]) / pn[-1] - 1) <= 1e-9)
    op = trained[trained["quantity"] == "operator_norm_product"].sort_values("step")["value"]
    op_r = rescaled[rescaled["quantity"] == "operator_norm_product"]["value"].iloc[0]
    measured["operator-norm product rescaled/trained - 1"] = op_r / op.iloc[-1] - 1
    checks["the operator-norm product changes > 10% under the rescaling"] = (
        abs(op_r / op.iloc[-1] - 1) > 0.1)
    return measured, checks


claim = Claim("path-norms grow in training and are invariant to neuron rescaling, which changes"
              " the product of operator norms (Gonon et al. 2024)", _claim_check)

make = PaperFigure("pathnorm-training", "L1/L2/L4 path-norms, the path-norm bound and the "
                                        "product of operator norms across training, with a "
                                        "rescaling-invariance check (Gonon et al. 2024)",
                   draw_from(data, plot), claim)
