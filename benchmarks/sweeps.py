"""Benchmark: an lr-transfer sweep, vmapped cells (``lr_transfer``) vs a plain loop of ``fit``.

The sweep: two-hidden-layer muP MLPs on sklearn digits at 4 widths x 8 learning rates x 2 seeds
(64 cells), SGD, batch 64, 200 steps each, final train/test loss. ``dynkit`` runs
``dynkit.analyses.scaling_transfer.lr_transfer`` (the 16 cells of one width as one vmapped
``lax.scan``); the baseline calls ``dynkit.train.fit`` once per cell (its jit-compiled step is
cached per (model, lr), so it compiles once per width and rate), in the same process, both
in memory (no run folders). Both include compilation, as a user's sweep does. The final
losses of the two are compared cell by cell. Target: the vmapped sweep >= 3x faster.
Run: ``python benchmarks/sweeps.py [--steps 200]``; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import numpy as np

import dynkit as dk
from dynkit.analyses.scaling_transfer import lr_transfer
from dynkit.train import fit


def main(steps: int = 200, widths=(64, 128, 256, 512)) -> str:
    digits = dk.data.load("digits", seed=0)
    lrs = [2.0 ** e for e in range(-6, 2)]
    seeds = [0, 1]

    def build(n):
        return dk.models.mlp(64, [n, n], 10, parameterization="mup")

    t0 = time.perf_counter()
    df = lr_transfer(build, widths, lrs, digits, steps, seeds, batch_size=64, progress=False)
    t_vmap = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop = []
    for n in widths:
        for lr in lrs:
            for s in seeds:
                h = fit(build(n), digits, lr=lr, seed=s, steps=steps, batch_size=64,
                        optimizer="sgd", progress=False).history
                loop.append(h[(h.step == steps) & (h.split == "train")]["loss"].iloc[0])
    t_loop = time.perf_counter() - t0

    ours = df.sort_values(["width", "lr", "seed"])["loss"].to_numpy(float)
    finite = np.isfinite(ours) & np.isfinite(loop)
    err = float(np.max(np.abs(ours[finite] - np.asarray(loop)[finite])
                       / np.maximum(np.abs(np.asarray(loop)[finite]), 1e-6)))
    same_nan = bool((np.isfinite(ours) == np.isfinite(loop)).all())
    cells = len(widths) * len(lrs) * len(seeds)
    load = os.getloadavg()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        (f"{when}, {platform.machine()} CPU ({os.cpu_count()} cores, jax {jax.__version__}), "
         f"load average {load[0]:.1f} at the end (machine shared with other work); "
         f"{cells} cells = widths {list(widths)} x lrs 2^-6..2^1 x seeds {seeds}, "
         f"{steps} SGD steps, batch 64, muP MLP 64-n-n-10 on digits"),
        "",
        "| sweep | wall (s, incl. compile) | per cell (s) | speed-up |",
        "|---|---:|---:|---:|",
        f"| loop of `fit` calls | {t_loop:.1f} | {t_loop / cells:.3f} | 1.00 |",
        (f"| `lr_transfer` (vmap over lr x seed per width) | {t_vmap:.1f} | {t_vmap / cells:.3f} | "
         f"**{t_loop / t_vmap:.1f}x** |"),
        "",
        (f"Final train losses agree to max relative {err:.1e} over finite cells; same diverged "
        f"cells: {same_nan}."),
    ])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    print(main(args.steps))
