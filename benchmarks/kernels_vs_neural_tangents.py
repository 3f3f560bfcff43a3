"""Infinite-width kernels: dynkit ``stax`` vs neural-tangents 0.6.5, side by side on this CPU.

The same JSON specs and the same inputs (numpy ``default_rng(0)``) go to both libraries, each in
its own interpreter: dynkit in this Python, neural-tangents in its pinned legacy virtualenv
(``benchmarks/legacy_env.py``, created on demand). The runs alternate per case and dtype, so
both see the same machine load. For each case ``kernel_fn(x, None, ("nngp", "ntk"))`` is
called once to compile (warm-up), then timed ``--repeats`` times with ``block_until_ready``;
the table gives the medians, the ratio dynkit / neural-tangents (< 1: dynkit faster) and the
largest relative difference between the two libraries' kernels (a parity check).

dynkit's ``kernel_fn`` is ``jit``-compiled inside and is timed as users call it;
neural-tangents' is wrapped in ``jax.jit(kernel_fn, static_argnames="get")``, its documented
fast path.

    python benchmarks/kernels_vs_neural_tangents.py            # the cases of issues 3 and 14
    python benchmarks/kernels_vs_neural_tangents.py --quick    # tiny sizes, to check it runs
    python benchmarks/kernels_vs_neural_tangents.py --cases cnn_convtranspose,unet_level1,seq_attention
    python benchmarks/kernels_vs_neural_tangents.py --big 20000  # dynkit only: tiled FC kernel

``--big N`` computes the N x N kernel (nngp + ntk, float32, x2=None) of the depth-3 ReLU FC
network with ``stax.batch(kernel_fn, --tile)`` on every local JAX device (the GPU when there
is one) and prints the wall time and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from legacy_env import run_in_legacy_env

DENSE = {"W_std": 1.5, "b_std": 0.05, "parameterization": "ntk"}
CONV = {"out_chan": 64, "filter_shape": [3, 3], "padding": "SAME", "W_std": 1.4, "b_std": 0.1,
        "parameterization": "ntk"}

SPECS = {
    "fc_relu_depth3": [["Dense", {"out_dim": 512, **DENSE}], ["Relu", {}]] * 3
    + [["Dense", {"out_dim": 1, **DENSE}]],
    "cnn_gap": [["Conv", CONV], ["Relu", {}], ["Conv", CONV], ["Relu", {}],
                ["GlobalAvgPool", {}], ["Dense", {"out_dim": 1, **DENSE}]],
    "fc_resnet": [["Dense", {"out_dim": 512, **DENSE}]]
    + [["Residual", [["Relu", {}], ["Dense", {"out_dim": 512, **DENSE}]]]] * 2
    + [["Relu", {}], ["Dense", {"out_dim": 1, **DENSE}]],
    # issue 14: transposed convolution, a U-Net level (encoder/decoder + concat skip), attention
    "cnn_convtranspose": [["Conv", CONV], ["Relu", {}],
                          ["ConvTranspose", {**CONV, "filter_shape": [2, 2], "strides": [2, 2],
                                             "padding": "VALID"}],
                          ["Relu", {}], ["GlobalAvgPool", {}], ["Dense", {"out_dim": 1, **DENSE}]],
    "unet_level1": [["Conv", CONV], ["Relu", {}], ["FanOut", {"num": 2}],
                    ["Parallel", [[["AvgPool", {"window_shape": [2, 2], "strides": [2, 2]}],
                                   ["Conv", CONV], ["Relu", {}],
                                   ["ConvTranspose", {**CONV, "filter_shape": [2, 2],
                                                      "strides": [2, 2], "padding": "VALID"}]],
                                  [["Identity", {}]]]],
                    ["FanInConcat", {"axis": -1}], ["Conv", CONV], ["Relu", {}],
                    ["GlobalAvgPool", {}], ["Dense", {"out_dim": 1, **DENSE}]],
    "seq_attention": [["Dense", {"out_dim": 256, **DENSE}], ["Relu", {}],
                      ["GlobalSelfAttention", {"n_chan_out": 256, "n_chan_key": 256,
                                               "n_chan_val": 256, "n_heads": 4,
                                               "W_key_std": 1.2, "W_value_std": 1.3,
                                               "W_query_std": 1.1, "W_out_std": 1.0,
                                               "b_std": 0.1}],
                      ["Relu", {}], ["GlobalAvgPool", {}], ["Dense", {"out_dim": 1, **DENSE}]],
}

#: case -> (spec name, per-sample input shape, N)
CASES = {
    "depth-3 ReLU FC, N=2000, d=100": ("fc_relu_depth3", (100,), 2000),
    "CNN + GlobalAvgPool, 8x8x3, N=128": ("cnn_gap", (8, 8, 3), 128),
    "FC ResNet (2 blocks, fc_resnet), N=2000, d=100": ("fc_resnet", (100,), 2000),
    "Conv + ConvTranspose 2x + GAP, 6x6x3 -> 12x12, N=48": ("cnn_convtranspose", (6, 6, 3), 48),
    "U-Net level (pool, conv, transpose, concat skip), 8x8x3, N=64": ("unet_level1", (8, 8, 3),
                                                                       64),
    "Dense + softmax self-attention + GAP, T=16, C=8, N=256": ("seq_attention", (16, 8), 256),
}
QUICK_N = {"fc_relu_depth3": 64, "cnn_gap": 8, "fc_resnet": 64, "cnn_convtranspose": 4,
           "unet_level1": 4, "seq_attention": 8}

# Runs in both interpreters: `stax` is dynkit.theory.stax or neural_tangents.stax.
SNIPPET = r'''
import json, statistics, sys, time
import jax
jax.config.update("jax_enable_x64", {x64})
import jax.numpy as jnp
import numpy as np
{import_stax}

def build(spec):
    layers = []
    for name, arg in spec:
        if name == "Residual":
            block = stax.serial(*build(arg))
            layers.append(stax.serial(stax.FanOut(2), stax.parallel(block, stax.Identity()),
                                      stax.FanInSum()))
        elif name == "Parallel":
            layers.append(stax.parallel(*[stax.serial(*build(b)) for b in arg]))
        else:
            kw = {{k: tuple(v) if isinstance(v, list) else v for k, v in arg.items()}}
            layers.append(getattr(stax, name)(**kw))
    return layers

spec, shape, n, repeats = json.loads({args!r})
dtype = np.float64 if {x64} else np.float32
x = jnp.asarray(np.random.default_rng(0).standard_normal((n, *shape)).astype(dtype))
kernel_fn = {wrap}(stax.serial(*build(spec))[2])
get = ("nngp", "ntk")
t0 = time.perf_counter()
k = kernel_fn(x, None, get)
jax.block_until_ready(k)
compile_s = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(kernel_fn(x, None, get))
    times.append(time.perf_counter() - t0)
ntk = np.asarray(k.ntk, dtype=np.float64)
nngp = np.asarray(k.nngp, dtype=np.float64)
print(json.dumps({{"median_s": statistics.median(times), "compile_s": compile_s,
                  "dtype": str(k.ntk.dtype),
                  "ntk_row0": ntk.reshape(n, -1)[0, :50].tolist(),
                  "nngp_row0": nngp.reshape(n, -1)[0, :50].tolist()}}))
'''

DYNKIT = {"import_stax": "from dynkit.theory import stax", "wrap": ""}
NT = {"import_stax": "from neural_tangents import stax",
      "wrap": '(lambda f: jax.jit(f, static_argnames="get"))'}


def snippet(lib: dict, spec, shape, n, repeats, x64: bool) -> str:
    args = json.dumps([spec, list(shape), n, repeats])
    return SNIPPET.format(x64=x64, args=args, **lib)


def run_dynkit(code: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=3600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"dynkit run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def max_rel_diff(a: dict, b: dict) -> float:
    diffs = []
    for key in ("nngp_row0", "ntk_row0"):
        u, v = (a[key], b[key])
        scale = max(abs(t) for t in v) or 1.0
        diffs.append(max(abs(p - q) for p, q in zip(u, v)) / scale)
    return max(diffs)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny N, to check the script runs")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table to this file (RESULTS.md collects the runs)")
    parser.add_argument("--big", type=int, default=None, metavar="N",
                        help="only the tiled N x N depth-3 FC kernel in dynkit")
    parser.add_argument("--tile", type=int, default=2000, help="tile size for --big")
    parser.add_argument("--cases", default=None,
                        help="comma-separated spec names to run (default: all), e.g. "
                             "cnn_convtranspose,unet_level1,seq_attention")
    args = parser.parse_args(argv)
    if args.big:
        return big_kernel(args.big, args.tile)

    load_before = load_average()
    rows = []
    wanted = None if args.cases is None else set(args.cases.split(","))
    for case, (spec_name, shape, n) in CASES.items():
        if wanted is not None and spec_name not in wanted:
            continue
        if args.quick:
            n = QUICK_N[spec_name]
            case = f"{case.split(', N=')[0]} (quick N={n})"
        for x64 in (False, True):
            spec = SPECS[spec_name]
            dk = run_dynkit(snippet(DYNKIT, spec, shape, n, args.repeats, x64))
            nt = run_in_legacy_env(snippet(NT, spec, shape, n, args.repeats, x64))
            rows.append((case, "float64" if x64 else "float32", dk, nt))
            print(f"{case} {rows[-1][1]}: dynkit {dk['median_s']:.4f}s  "
                  f"neural-tangents {nt['median_s']:.4f}s", file=sys.stderr)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Infinite-width kernels: dynkit vs neural-tangents 0.6.5 (CPU)",
        "",
        (f"Date: {now}. Machine: {machine()}. Load average (1/5/15 min) before: "
         f"{load_before}, after: {load_average()}."),
        (f"`kernel_fn(x, None, (\"nngp\", \"ntk\"))`, median of {args.repeats} runs after one "
         "warm-up compile, `block_until_ready`; dynkit in this Python (jax "
         f"{_jax_version()}), neural-tangents in its pinned env (jax 0.4.25). "
         "Ratio < 1: dynkit is faster. Parity: max relative difference of the first kernel row."),
        "",
        ("| case | dtype | dynkit (s) | neural-tangents (s) | ratio dynkit/nt "
         "| compile dynkit / nt (s) | parity |"),
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case, dtype, dk, nt in rows:
        lines.append(f"| {case} | {dtype} | {dk['median_s']:.4f} | {nt['median_s']:.4f} | "
                     f"{dk['median_s'] / nt['median_s']:.2f} | "
                     f"{dk['compile_s']:.2f} / {nt['compile_s']:.2f} | "
                     f"{max_rel_diff(dk, nt):.1e} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None and not args.quick:
        args.out.write_text(table)
    return table


def big_kernel(n: int, tile: int) -> str:
    """Time ``stax.batch(kernel_fn, tile)(x, None)`` for the depth-3 FC network, N = n."""
    import resource
    import time

    import jax
    import numpy as np

    from dynkit.theory import stax

    kernel_fn = stax.from_spec(SPECS["fc_relu_depth3"])[2]
    x = np.random.default_rng(0).standard_normal((n, 100)).astype(np.float32)
    t0 = time.perf_counter()
    k = stax.batch(kernel_fn, tile)(x, None, ("nngp", "ntk"))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    line = (f"{n} x {n} depth-3 FC kernel (nngp + ntk, float32, tiles of {tile}) on "
            f"{[d.device_kind for d in jax.local_devices()]}: {wall:.1f} s incl. compile, "
            f"peak RSS {peak:.2f} GiB, finite: {bool(np.isfinite(k.ntk).all())}; "
            f"{machine()}, load {load_average()}")
    print(line)
    return line


def _jax_version() -> str:
    import jax

    return jax.__version__


if __name__ == "__main__":
    main()
