"""Benchmark: Git Re-Basin weight matching of two WRN-16-4 networks on CPU (target < 10 s).

Two independently initialized WRN-16-4 (CIFAR-sized, 2.7 M parameters) are matched; the
second is also a random permutation of the first, which weight matching must undo exactly.
Prints a markdown table (time, coordinate-descent sweeps); the git-re-basin reference code is
not run here (it is not packaged on PyPI), so there is no side-by-side ratio for this one.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import date

import jax
import numpy as np

import dynkit as dk
from dynkit.analyses import lmc
from dynkit.analyses.permutation import permutation_spec


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(repeats: int = 3) -> None:
    model = dk.models.wrn(16, 4, num_classes=10, input_shape=(32, 32, 3))
    pa = jax.tree_util.tree_map(np.asarray, model.init(jax.random.PRNGKey(0)))
    pb = jax.tree_util.tree_map(np.asarray, model.init(jax.random.PRNGKey(1)))
    spec = permutation_spec(model)
    rng = np.random.default_rng(0)
    pc = lmc.apply_permutation(model, pa, {g: rng.permutation(n) for g, n in spec.sizes.items()})
    rows = []
    for label, other in (("independent pair", pb), ("permuted copy", pc)):
        times, sweeps = [], 0
        for _ in range(repeats):
            t = time.perf_counter()
            perm = lmc.weight_matching(model, pa, other)
            times.append(time.perf_counter() - t)
            sweeps = perm.sweeps
        if label == "permuted copy":
            back = lmc.apply_permutation(model, other, perm)
            assert all(np.array_equal(back[n][k], pa[n][k]) for n in pa for k in pa[n])
        rows.append((label, statistics.median(times), sweeps))
    print(f"## Weight matching, WRN-16-4 ({model.num_params():,} parameters, "
          f"{len(spec.groups)} permutation groups)\n")
    print(f"{date.today()}, {_cpu()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| pair | median time (s) | sweeps | target |")
    print("|---|---:|---:|---|")
    for label, t, s in rows:
        print(f"| {label} | {t:.2f} | {s} | < 10 s |")


if __name__ == "__main__":
    main()
