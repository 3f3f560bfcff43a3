"""Full-batch GD of a two-layer ReLU net (``dynkit.theory.two_layer.gd``) on CPU, as a
fraction of this machine's measured float32 matmul peak.

Work per GD step (float32): forward ``X W^T`` (2 n m d), backward ``delta^T X`` for the
first-layer gradient (2 n m d) and the second-layer/output products (4 n m): about
``4 n m d + 4 n m`` FLOPs. The peak is the best GFLOP/s of a large float32 matmul measured in
the same run. The compile time is measured on a short run and subtracted.

    python benchmarks/two_layer.py                      # 10^4 steps, m = 10^4, n = 10^3, d = 100
    python benchmarks/two_layer.py --steps 200          # shorter; per-step numbers are the same
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp

from dynkit.theory import two_layer as tl


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` float32 ``size x size`` matmul throughput in GFLOP/s."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def run_gd(m: int, n: int, d: int, steps: int) -> float:
    """Seconds for ``steps`` GD steps (including compilation)."""
    kx, kp = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (n, d), jnp.float32)
    y = jnp.tanh(x[:, 0])
    net = tl.TwoLayer(width=m, gamma=1.0)
    p = tl.init(kp, net, d, dtype=jnp.float32)
    t = time.perf_counter()
    tr = tl.gd(p, net, x, y, lr=0.1, steps=steps, record_every=steps)
    jax.block_until_ready(tr.params)
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--m", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=1_000)
    ap.add_argument("--d", type=int, default=100)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    peak = matmul_peak()
    t_short = run_gd(args.m, args.n, args.d, 2)            # compile + 2 steps
    t_full = run_gd(args.m, args.n, args.d, args.steps)
    run_s = max(t_full - t_short, 1e-9)                    # compile time subtracted
    per_step = run_s / (args.steps - 2)
    flops = 4 * args.n * args.m * args.d + 4 * args.n * args.m
    achieved = flops / per_step / 1e9
    load1 = os.getloadavg()[0]
    print("| steps | m | n | d | time (s) | s/step | GFLOP/s | matmul peak GFLOP/s | "
          "fraction of peak | load avg (1 min, start/end) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.steps} | {args.m} | {args.n} | {args.d} | {t_full:.1f} | {per_step:.4f} | "
          f"{achieved:.1f} | {peak:.1f} | {achieved / peak:.0%} | {load0:.1f} / {load1:.1f} |")


if __name__ == "__main__":
    main()
