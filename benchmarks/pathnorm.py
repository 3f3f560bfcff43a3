"""Benchmark: float64 L^1 path-norm of ResNet-18 at 224x224 vs one float32 forward pass.

Both run in this process on the same (randomly initialized) torchvision-layout ResNet-18
(``dynkit.models.resnet18``), batch 1, after a warm-up call that compiles them; each repeat
times one of each, interleaved, and the table reports medians and their ratio (target: the
path-norm costs at most 3 forward passes). Run: ``python benchmarks/pathnorm.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import dynkit as dk
from dynkit.analyses.pathnorm import path_norm


def main(repeats: int = 7, size: int = 224) -> str:
    model = dk.models.resnet18(input_shape=(size, size, 3))
    params = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((1, size, size, 3), jnp.float32)
    forward = jax.jit(model.apply)

    t0 = time.perf_counter()
    forward(params, x).block_until_ready()
    t_fwd_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    pn = path_norm(model, params, 1)
    t_pn_compile = time.perf_counter() - t0

    fwd, pns = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(params, x).block_until_ready()
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        path_norm(model, params, 1)
        pns.append(time.perf_counter() - t0)
    f, p = statistics.median(fwd), statistics.median(pns)
    cpu = platform.processor() or platform.machine()
    header = (f"ResNet-18, {size}x{size}, batch 1, CPU ({cpu}, jax {jax.__version__}), median of "
              f"{repeats} interleaved repeats; L1 path-norm = exp({pn.log_value:.6f})")
    row = (f"| `path_norm(model, params, q=1)` | float64 | {t_pn_compile:.2f} | {p:.3f} | "
           f"{p / f:.2f} |")
    return "\n".join([
        header,
        "",
        "| computation | dtype | first call incl. compile (s) | median (s) | ratio |",
        "|---|---|---|---|---|",
        f"| forward pass `jit(model.apply)` | float32 | {t_fwd_compile:.2f} | {f:.3f} | 1.00 |",
        row,
    ])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    print(main(args.repeats, args.size))
