"""Extra neural-tangents 0.6.5 reference kernels for the layers of issue 14 (variants the shared
golden set does not cover: other attention scalings and mechanisms, 2-D attention, strided /
padded transposed and local convolutions, downsampling resizes, ExpNormalized, Hermite on
non-unit inputs, Monomial degrees 3-5, RectifiedMonomial off the diagonal, Dropout on images).

Runs neural-tangents in its pinned legacy virtualenv (``benchmarks/legacy_env.py``) and writes
``tests/data/neural_tangents_vocab/<case>.npz`` (float64: ``x1``, ``x2``, ``nngp_12``,
``ntk_12``, ``nngp_11``, ``ntk_11``, as the shared golden files) plus ``manifest.json``::

    python benchmarks/nt_golden_vocab.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from legacy_env import run_in_legacy_env

OUT = HERE.parent / "tests" / "data" / "neural_tangents_vocab"

D = {"W_std": 1.5, "b_std": 0.05, "parameterization": "ntk"}
C = {"filter_shape": [3, 3], "padding": "SAME", "W_std": 1.4, "b_std": 0.1,
     "parameterization": "ntk"}
HEAD = [["GlobalAvgPool", {}], ["Dense", {"out_dim": 1, **D}]]
ATT = {"n_chan_out": 16, "n_chan_key": 16, "n_chan_val": 16, "n_heads": 2, "W_key_std": 1.2,
       "W_value_std": 1.3, "W_query_std": 1.1, "W_out_std": 1.0, "b_std": 0.1}

#: case -> (spec, per-sample input shape)
CASES = {
    "seq_attention_identity_linear": (
        [["Dense", {"out_dim": 16, **D}], ["Relu", {}],
         ["GlobalSelfAttention", {**ATT, "attention_mechanism": "IDENTITY"}], ["Relu", {}]]
        + HEAD, (5, 4)),
    "seq_attention_identity_sqrt": (
        [["Dense", {"out_dim": 16, **D}], ["Relu", {}],
         ["GlobalSelfAttention", {**ATT, "attention_mechanism": "IDENTITY",
                                  "linear_scaling": False}], ["Relu", {}]] + HEAD, (5, 4)),
    "img_attention_softmax": (
        [["Conv", {"out_chan": 8, **C}], ["Relu", {}], ["GlobalSelfAttention", ATT],
         ["Relu", {}]] + HEAD, (3, 4, 2)),
    "img_convtranspose_same": (
        [["Conv", {"out_chan": 8, **C}], ["Relu", {}],
         ["ConvTranspose", {"out_chan": 8, "filter_shape": [3, 2], "strides": [2, 3],
                            "padding": "SAME", "W_std": 1.3, "b_std": 0.2,
                            "parameterization": "standard"}], ["Relu", {}]] + HEAD, (4, 3, 2)),
    "seq_convtranspose_valid": (
        [["ConvTranspose", {"out_chan": 8, "filter_shape": [3], "strides": [2],
                            "padding": "VALID", "W_std": 1.3, "b_std": 0.2}], ["Relu", {}],
         ["Flatten", {}], ["Dense", {"out_dim": 1, **D}]], (5, 2)),
    "img_convlocal_strided": (
        [["ConvLocal", {"out_chan": 8, "filter_shape": [2, 2], "strides": [2, 1],
                        "padding": "VALID", "W_std": 1.2, "b_std": 0.3}], ["Relu", {}],
         ["ConvLocal", {"out_chan": 8, "filter_shape": [2, 2], "padding": "SAME",
                        "W_std": 1.1, "b_std": 0.1, "parameterization": "standard"}],
         ["Relu", {}]] + HEAD, (6, 5, 2)),
    "img_resize_down": (
        [["Conv", {"out_chan": 8, **C}], ["Relu", {}],
         ["ImageResize", {"shape": [-1, 3, 5, -1], "method": "linear"}],
         ["Conv", {"out_chan": 8, **C}], ["Relu", {}],
         ["ImageResize", {"shape": [-1, 2, 7, -1], "method": "nearest"}],
         ["Conv", {"out_chan": 8, **C}], ["Relu", {}]] + HEAD, (6, 6, 2)),
    "img_dropout": (
        [["Conv", {"out_chan": 8, **C}], ["Relu", {}], ["Dropout", {"rate": 0.7}],
         ["Conv", {"out_chan": 8, **C}], ["Relu", {}]] + HEAD, (4, 4, 2)),
    "fc_exp_normalized": (
        [["Dense", {"out_dim": 8, **D}], ["ExpNormalized", {"gamma": 0.7, "shift": -0.5}],
         ["Dense", {"out_dim": 8, **D}], ["Relu", {}], ["Dense", {"out_dim": 1, **D}]], (6,)),
    "fc_hermite_nonunit": (
        [["Dense", {"out_dim": 8, "W_std": 1.2, "b_std": 0.3}], ["Hermite", {"degree": 2}],
         ["Dense", {"out_dim": 1, **D}]], (6,)),
    "fc_monomials": (
        [["Dense", {"out_dim": 8, "W_std": 0.9, "b_std": 0.1}], ["Monomial", {"degree": 3}],
         ["Dense", {"out_dim": 8, "W_std": 0.9, "b_std": 0.1}], ["Monomial", {"degree": 4}],
         ["Dense", {"out_dim": 8, "W_std": 0.9, "b_std": 0.1}], ["Monomial", {"degree": 5}],
         ["Dense", {"out_dim": 1, **D}]], (6,)),
    "fc_exp_gaussian": (
        [["Dense", {"out_dim": 8, "W_std": 0.8, "b_std": 0.1}], ["Exp", {"a": 1.5, "b": 0.4}],
         ["Dense", {"out_dim": 8, "W_std": 0.8, "b_std": 0.1}],
         ["Gaussian", {"a": 0.7, "b": -0.3}], ["Dense", {"out_dim": 1, **D}]], (6,)),
    "fc_rectified_monomial3": (
        [["Dense", {"out_dim": 8, **D}], ["RectifiedMonomial", {"degree": 3}],
         ["Dense", {"out_dim": 1, **D}]], (6,)),
}

CODE = r'''
import json
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from neural_tangents import stax

def build(spec):
    out = []
    for name, arg in spec:
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in arg.items()}
        out.append(getattr(stax, name)(**kw))
    return out

cases, out = json.loads(ARGS)
res = {}
for i, (case, (spec, shape)) in enumerate(sorted(cases.items())):
    rng = np.random.default_rng(100 + i)
    n1, n2 = (4, 3) if len(shape) > 1 else (6, 4)
    x1 = rng.standard_normal((n1, *shape))
    x2 = rng.standard_normal((n2, *shape))
    kernel_fn = stax.serial(*build(spec))[2]
    k12 = kernel_fn(x1, x2, ("nngp", "ntk"))
    k11 = kernel_fn(x1, None, ("nngp", "ntk"))
    np.savez(f"{out}/{case}.npz", x1=x1, x2=x2, nngp_12=np.asarray(k12.nngp),
             ntk_12=np.asarray(k12.ntk), nngp_11=np.asarray(k11.nngp),
             ntk_11=np.asarray(k11.ntk))
    res[case] = bool(np.isfinite(np.asarray(k12.nngp)).all())
print(json.dumps(res))
'''


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    code = f"ARGS = {json.dumps(json.dumps([CASES, str(OUT)]))}\n" + CODE
    finite = run_in_legacy_env(code)
    manifest = {case: {"spec": spec, "shape": list(shape)} for case, (spec, shape)
                in CASES.items()}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(finite)


if __name__ == "__main__":
    main()
