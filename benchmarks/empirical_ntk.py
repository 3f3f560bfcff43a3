"""Empirical NTK timings: structured vs Jacobian contraction vs NTK-vector products.

Cases (float32, logit-traced kernel K(x, x) unless --full):

* ``fc``: 3-hidden-layer ReLU MLP of width 2048 (NTK parameterization), 128 input features,
  8 logits, N = 16 inputs;
* ``resnet20``: CIFAR ResNet-20 (BatchNorm, eval mode), 32x32x3 inputs, 10 logits, N = 64.

Each method is compiled and run once (warm-up, also checking that the methods agree), then
timed ``--repeats`` times; the table gives the median wall time and the speed-up of
"structured" over each method. ``--peer`` also times the same ``fc`` network, with the same
parameters and inputs, in neural-tangents 0.6.5's structured derivatives (its pinned legacy
virtualenv, see ``legacy_env.py``), alternating the two libraries ``--rounds`` times, and
checks that the kernels agree.
Run: ``python benchmarks/empirical_ntk.py [--cases fc,resnet20] [--peer]``.

``--resnet20-full`` instead computes the logit-traced 1000 x 1000 NTK ``K(x, x)`` of ResNet-20
(``--n`` inputs of shape 32x32x3, standard normal, float32) once, with ``--methods`` (default
``auto``) in tiles of ``--batch-size`` inputs, and prints the wall time and the process's peak
resident memory (``getrusage``; run it under ``/usr/bin/time -v`` for an outside measurement).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

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


PEER_CODE = """
import json, statistics, time, numpy as np, jax
import neural_tangents as nt
from neural_tangents import stax
d = np.load({path!r})
layers = []
for i in range(3):
    layers += [stax.Dense(2048, W_std=1.4, b_std=0.1), stax.Relu()]
init_fn, apply_fn, _ = stax.serial(*layers, stax.Dense(8, W_std=1.4, b_std=0.1))
params = [(d[f"w{{i}}"], d[f"b{{i}}"]) if f"w{{i}}" in d else () for i in range(7)]
fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
             implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES))
x = d["x"]
t = time.perf_counter(); k = np.asarray(jax.block_until_ready(fn(x, None, params)))
first = time.perf_counter() - t
times = []
for _ in range({repeats}):
    t = time.perf_counter()
    jax.block_until_ready(fn(x, None, params))
    times.append(time.perf_counter() - t)
print(json.dumps(dict(median=statistics.median(times), first=first, k=k.tolist())))
"""


def _peer_fc(model, params, x, repeats: int) -> dict:
    """Time neural-tangents' structured empirical NTK on the same fc network and inputs."""
    from legacy_env import run_in_legacy_env

    names = ["fc0", "fc1", "fc2", "head"]
    arrays = {"x": np.asarray(x)}
    for slot, name in zip((0, 2, 4, 6), names):  # stax.serial slots: Dense, Relu, ...
        arrays[f"w{slot}"] = np.asarray(params[name]["w"])
        arrays[f"b{slot}"] = np.asarray(params[name]["b"])
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "fc.npz")
        np.savez(path, **arrays)
        return run_in_legacy_env(PEER_CODE.format(path=path, repeats=repeats))


def _resnet20_full(n: int, method: str, batch_size: int) -> None:
    """One logit-traced ``n x n`` ResNet-20 kernel, tiled; time and peak memory."""
    model = dm.resnet20(num_classes=10)
    params = model.init(jax.random.PRNGKey(0), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (n, *model.input_shape), jnp.float32)
    fn = empirical.ntk_fn(model, method, batch_size=batch_size)
    t0 = time.perf_counter()
    k = np.asarray(jax.block_until_ready(fn(x, None, params)))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    sym = float(np.abs(k - k.T).max() / np.abs(k).max())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; float32; ResNet-20 "
          f"({model.num_params():,} params), logit-traced K(x, x), N = {n}, method {method!r}, "
          f"batch_size {batch_size}")
    print(f"kernel {k.shape}, finite: {bool(np.isfinite(k).all())}, min eigenvalue / max: "
          f"{np.linalg.eigvalsh(k.astype(np.float64))[[0, -1]]}, asymmetry {sym:.1e}")
    print(f"wall time (incl. compile): {wall:.1f} s; peak RSS: {peak:.2f} GiB", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="fc,resnet20")
    ap.add_argument("--methods", default="structured,jacobian,ntvp")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="full (N, N, O, O) kernel")
    ap.add_argument("--peer", action="store_true",
                    help="also time neural-tangents (legacy env) on the fc case")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --peer: alternating dynkit / neural-tangents rounds")
    ap.add_argument("--resnet20-full", action="store_true",
                    help="only the tiled logit-traced N x N ResNet-20 kernel (N = --n)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args(argv)
    if args.resnet20_full:
        method = "auto" if args.methods == ap.get_default("methods") else args.methods
        _resnet20_full(args.n, method, args.batch_size)
        return
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
        if args.peer and case == "fc" and not args.full:
            _compare_with_peer(model, params, x, o, ref, args.repeats, args.rounds)


def _compare_with_peer(model, params, x, o, ref, repeats: int, rounds: int) -> None:
    """dynkit structured and neural-tangents structured, alternating ``rounds`` times (each a
    median of ``repeats`` calls) so both see the same machine load; medians over rounds."""
    fn = empirical.ntk_fn(model, "structured")
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(_time(lambda: fn(x, None, params), repeats)[0])
        peer = _peer_fc(model, params, x, repeats)
        theirs.append(peer["median"])
    diff = float(np.abs(np.asarray(peer["k"]) - ref).max() / np.abs(ref).max())
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    row = f"| fc | {model.num_params():,} | {x.shape[0]} | {o} |"
    print(f"{row} structured, alternating ({rounds} rounds) | {t_ours:.4f} | - | 1.0x | - |")
    print(f"{row} neural-tangents 0.6.5 structured, alternating | {t_theirs:.4f} | "
          f"{peer['first']:.1f} | {t_theirs / t_ours:.2f}x | {diff:.1e} |")
    print(f"\nratio dynkit / neural-tangents = {t_ours / t_theirs:.2f} (per round: "
          + ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs)) + ")", flush=True)

if __name__ == "__main__":
    main()
