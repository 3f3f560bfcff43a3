"""Out-of-core infinite-width kernels: depth-3 ReLU FC NNGP+NTK on MNIST-1D into a Zarr store
vs the same kernel in memory, and kernel regression from the store.

Each measurement runs in its own process (``--child``) so that its peak RSS
(``ru_maxrss``) is the driver's alone:

* ``store``: ``stax.batch(kernel_fn, B, store=...)(x, None, ("nngp", "ntk"))`` at ``--n``
  (a fresh store), wall time including compile, peak RSS, store size on disk;
* ``memory``: ``stax.batch(kernel_fn, B)(x, None, ...)`` in memory at ``--n-mem``;
* ``regress``: NTK regression (Nyström-preconditioned conjugate gradients streaming the
  store) on the store's first ``--n-regress`` inputs, 80 % train / 20 % test: test
  accuracy, passes, peak RSS;
* with ``--rss-n``, a second ``store`` run at that size: the driver's peak RSS must not grow
  with N (the issue: N = 5,000 vs 20,000 within 20 %).

Throughput is kernel entries per second, ``2 N² / wall`` (two kernels); the ratio
store/memory is the target (>= 0.7). The full-size run of the issue is
``python benchmarks/kernels_out_of_core.py --n 60000 --n-mem 20000 --n-regress 30000``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SPEC = [["Dense", {"out_dim": 512, "W_std": 1.4, "b_std": 0.05}], ["Relu"],
        ["Dense", {"out_dim": 512, "W_std": 1.4, "b_std": 0.05}], ["Relu"],
        ["Dense", {"out_dim": 512, "W_std": 1.4, "b_std": 0.05}], ["Relu"],
        ["Dense", {"out_dim": 10, "W_std": 1.4, "b_std": 0.05}]]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _du(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def child(mode: str, n: int, batch: int, store: str) -> dict:
    from dynkit.cli_kernel import load_data_spec
    from dynkit.theory import stax

    kernel_fn = stax.from_spec(SPEC)[2]
    if mode == "regress":
        from dynkit.theory.kernel_regress_store import matmul, solve
        from dynkit.theory.kernel_store_read import open_kernels

        k = open_kernels(store).ntk
        _, labels, _ = load_data_spec(f"mnist1d:{k.shape[0]}")  # the store's inputs' labels
        n_train = int(0.8 * n)
        y = np.eye(10)[labels[:n]] - 0.1
        t0 = time.perf_counter()
        sol = solve(k.window(0, n_train, 0, n_train), y[:n_train], 1e-3, tol=1e-6)
        pred = matmul(k.window(n_train, n, 0, n_train), sol.alpha)
        acc = float(np.mean(pred.argmax(1) == labels[n_train:n]))
        return {"wall": time.perf_counter() - t0, "rss": _rss_gib(), "acc": acc,
                "passes": sol.iterations}
    x, _, _ = load_data_spec(f"mnist1d:{n}")
    x = x.astype(np.float32)
    t0 = time.perf_counter()
    if mode == "store":
        ks = stax.batch(kernel_fn, batch, store=store, spec=SPEC, progress=False)(x, None)
        assert ks.ntk.tiles_computed > 0
        out = {"size": _du(store)}
    else:
        k = stax.batch(kernel_fn, batch, progress=False)(x, None)
        assert np.isfinite(k.ntk[-1]).all()
        out = {}
    return dict(out, wall=time.perf_counter() - t0, rss=_rss_gib())


def _run_child(*args) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", *map(str, args)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="inputs of the stored kernel")
    ap.add_argument("--n-mem", type=int, default=10_000, help="inputs of the in-memory run")
    ap.add_argument("--n-regress", type=int, default=5_000)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--rss-n", type=int, default=None,
                    help="also store the kernel of this many inputs (a fresh store, its own "
                         "process): the driver's peak RSS there vs at --n (target: < 20 %% apart)")
    ap.add_argument("--dir", default=None, help="where the store goes (default: a temp dir)")
    ap.add_argument("--results", default=None, help="append the table to this markdown file")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "N", "B", "STORE"), default=None)
    args = ap.parse_args(argv)
    if args.child:
        mode, n, b, store = args.child
        print(json.dumps(child(mode, int(n), int(b), store)))
        return ""
    work = args.dir or tempfile.mkdtemp(prefix="dynkit-ooc-")
    store = os.path.join(work, f"k{args.n}.zarr")
    shutil.rmtree(store, ignore_errors=True)
    load = os.getloadavg()[0]
    mem = _run_child("memory", args.n_mem, args.batch_size, "-")
    st = _run_child("store", args.n, args.batch_size, store)
    reg = _run_child("regress", min(args.n_regress, args.n), args.batch_size, store)
    small = None
    if args.rss_n:
        small_store = os.path.join(work, f"k{args.rss_n}.zarr")
        shutil.rmtree(small_store, ignore_errors=True)
        small = _run_child("store", args.rss_n, args.batch_size, small_store)
    tp_st, tp_mem = 2 * args.n**2 / st["wall"], 2 * args.n_mem**2 / mem["wall"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        (f"{now}, load average {load:.1f} before / {os.getloadavg()[0]:.1f} after (2-core CPU "
         f"shared with other jobs), float32, tile {args.batch_size}, depth-3 ReLU FC "
         f"(width-512 spec, NNGP + NTK), MNIST-1D."),
        "",
        "| run | N | wall (s) | entries/s | driver peak RSS (GiB) | store (GiB) | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
        (f"| in memory (`stax.batch`) | {args.n_mem} | {mem['wall']:.1f} | {tp_mem:.3g} | "
         f"{mem['rss']:.2f} | - | |"),
        (f"| Zarr store (`store=`) | {args.n} | {st['wall']:.1f} | {tp_st:.3g} | "
         f"{st['rss']:.2f} | {st['size'] / 2**30:.2f} | |"),
        *([(f"| Zarr store (`store=`) | {args.rss_n} | {small['wall']:.1f} | "
            f"{2 * args.rss_n**2 / small['wall']:.3g} | {small['rss']:.2f} | "
            f"{small['size'] / 2**30:.2f} | |")] if small else []),
        (f"| NTK regression from the store (Nyström-PCG) | {min(args.n_regress, args.n)} | "
         f"{reg['wall']:.1f} | - | {reg['rss']:.2f} | - | test accuracy {reg['acc']:.3f}, "
         f"{reg['passes']} passes, diag_reg 1e-3 |"),
        "",
        (f"Throughput ratio store/memory: **{tp_st / tp_mem:.2f}** (target >= 0.7); driver "
         f"peak RSS max {max(st['rss'], reg['rss']):.2f} GiB (target <= 2)."),
    ]
    if small:
        rows.append(f"Driver peak RSS of the store run, N = {args.n} / N = {args.rss_n}: "
                    f"**{st['rss'] / small['rss']:.2f}** (target < 1.2).")
    table = "\n".join(rows)
    print(table)
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + table + "\n")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return table


if __name__ == "__main__":
    main()
