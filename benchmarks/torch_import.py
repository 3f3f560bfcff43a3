"""Benchmark: graph import of torchvision ResNet-50 and DenseNet-121, and dynkit's float32 forward
pass vs torch's on the same CPU.

For each model (``weights=None``, random weights, eval mode): the time of
``dk.models.from_torch(module, torch.zeros(1, 3, S, S))`` (``torch.export`` trace, op mapping and
state_dict conversion; target < 10 s), then the forward pass on one batch of ``B`` inputs:
dynkit ``jax.jit(model.apply)`` (float32, after a warm-up call that compiles it,
``block_until_ready``) and torch ``module(x)`` under ``torch.no_grad()`` in eval mode, timed
interleaved, medians reported with their ratio (target: dynkit ≤ 1.5× torch). The two outputs
are compared as a check that the same function is timed. The issue's size is batch 32 at
224×224: ``python benchmarks/torch_import.py [--batch 32] [--size 224] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
import torch

import dynkit as dk


def import_torchvision():
    """torchvision, importable with the CPU torch.

    The torchvision wheel pip pairs with the CPU torch is built for CUDA torch, and its import
    fails with ``operator torchvision::nms does not exist``. Its pure-Python model code works once
    the two missing operator schemas are declared. This replicates the ``torchvision`` fixture of
    ``tests/conftest.py``; it lives in the benchmark (like there, in the tests), never in the
    package.
    """
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision.shim = lib  # keep the library (and its definitions) alive
    return importlib.import_module("torchvision")


def bench(name: str, module, batch: int, size: int, repeats: int) -> dict:
    module = module.eval()
    t0 = time.perf_counter()
    model, params = dk.models.from_torch(module, torch.zeros(1, 3, size, size))
    t_import = time.perf_counter() - t0

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, size, size))
                         .astype(np.float32))
    x_nhwc = jax.device_put(np.moveaxis(x.numpy(), 1, -1))
    forward = jax.jit(model.apply)
    t0 = time.perf_counter()
    ours = np.asarray(forward(params, x_nhwc).block_until_ready())
    t_compile = time.perf_counter() - t0
    with torch.no_grad():
        ref = module(x).numpy()
    rel = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))

    t_dk, t_torch = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(params, x_nhwc).block_until_ready()
        t_dk.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            module(x)
        t_torch.append(time.perf_counter() - t0)
    d, t = statistics.median(t_dk), statistics.median(t_torch)
    return {"model": name, "nodes": len(model.nodes), "import_s": t_import,
            "compile_s": t_compile, "dynkit_s": d, "torch_s": t, "ratio": d / t, "rel_diff": rel}


def main(batch: int = 32, size: int = 224, repeats: int = 3) -> str:
    tv = import_torchvision()
    torch.manual_seed(0)
    rows = [bench(name, getattr(tv.models, name)(weights=None), batch, size, repeats)
            for name in ("resnet50", "densenet121")]
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [
        (f"CPU {cpu} ({os.cpu_count()} cores, load average {load}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jax {jax.__version__}; batch {batch} at "
        f"{size}x{size}, float32, median of {repeats} interleaved repeats"),
        "",
        ("| model | nodes | import `from_torch` (s) | dynkit first call incl. compile (s) | "
        "dynkit forward (s) | torch forward (s) | dynkit / torch | max rel. difference |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['model']} | {r['nodes']} | {r['import_s']:.2f} | {r['compile_s']:.1f} | "
              f"{r['dynkit_s']:.2f} | {r['torch_s']:.2f} | {r['ratio']:.2f} | "
              f"{r['rel_diff']:.1e} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(main(args.batch, args.size, args.repeats))
