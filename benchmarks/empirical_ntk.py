"""Empirical NTK timings: structured vs Jacobian contraction vs NTK-vector products.

Cases (float32, logit-traced kernel K(x, x) unless --full):

* ``fc``: 3-hidden-layer ReLU MLP of width 2048 (NTK parameterization), 128 input features,
  8 logits, N = 16 inputs;
* ``resnet20``: CIFAR ResNet-20 (BatchNorm, eval mode), 32x32x3 inputs, 10 logits, N = 64.

Each method is compiled and run once (warm-up, also checking that the methods agree), then
timed ``--repeats`` times; the table gives the median wall time and the speed-up of
"structured" over each method. Run: ``python benchmarks/empirical_ntk.py [--cases fc,resnet20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import dynkit.models as dm
from dynkit.theory import empirical


def _case(name: str):
    key = jax.random.PRNGKey(0)
    if name == "fc":
        model = dm.mlp(128, [2048, 2048, 2048], 8, parameterization="ntk", W_std=1.4,
                       b_std=0.1)
        n = 16
    elif name == "resnet20":
        model = dm.resnet20(num_classes=10)
        n = 64
    else:
        raise SystemExit(f"unknown case {name!r}")
    params = model.init(key, jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (n, *model.input_shape), jnp.float32)
    return model, params, x


def _time(fn, repeats: int) -> tuple[float, np.ndarray, float]:
    t0 = time.perf_counter()
    k = np.asarray(jax.block_until_ready(fn()))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), k, first


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="fc,resnet20")
    ap.add_argument("--methods", default="structured,jacobian,ntvp")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="full (N, N, O, O) kernel")
    args = ap.parse_args(argv)
    trace_axes = () if args.full else (-1,)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; float32; "
          f"{'full' if args.full else 'logit-traced'} kernel K(x, x); median of {args.repeats}")
    print()
    print("| case | params | N | logits | method | median (s) | first call (s) | "
          "structured speed-up | max rel. diff vs structured |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        model, params, x = _case(case)
        o = jax.eval_shape(model.apply, params, x).shape[-1]
        ref = None
        t_struct = None
        for method in args.methods.split(","):
            fn = empirical.ntk_fn(model, method, trace_axes=trace_axes)
            med, k, first = _time(lambda fn=fn, x=x, p=params: fn(x, None, p), args.repeats)
            if ref is None:
                ref = k
            if method == "structured":
                t_struct = med
            diff = float(np.abs(k - ref).max() / np.abs(ref).max())
            speed = f"{med / t_struct:.1f}x" if t_struct else "-"
            print(f"| {case} | {model.num_params():,} | {x.shape[0]} | {o} | {method} | "
                  f"{med:.3f} | {first:.1f} | {speed} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
