"""Hessian spectra of a CIFAR ResNet-20: dynkit vs PyHessian 0.1, same weights, data, tolerance.

The torch ResNet-20 (``tests/torch_reference.CifarResNet``, option-B shortcuts, BatchNorm in
eval mode with running statistics calibrated on the data) gets random weights (seed 0) and
``--n`` CIFAR-sized inputs ``N(0, 1)`` of shape 3x32x32 with random labels; both libraries get
these exact weights and data (dynkit through ``dk.models.from_torch``) and the cross-entropy
loss, float32 on the CPU.

* **Top eigenvalues** (``--k``): dynkit ``hessian.top_eigenvalues`` (Lanczos, full
  reorthogonalization, relative residual ``--lanczos-tol``) vs PyHessian ``eigenvalues(top_n=k,
  tol=--tol)`` (power iteration with deflation, its default tolerance 1e-3).
* **Trace**: dynkit ``hessian.trace(rtol=--rtol)`` (Hutchinson, stops at a relative standard
  error ``rtol``, default 1%) vs PyHessian ``trace(maxIter=n, tol=0)`` with the same number
  ``n`` of Rademacher probes (PyHessian has no standard-error stop).

PyHessian is not a dependency of dynkit: ``pip install --no-deps --target
benchmarks/.pyhessian pyhessian==0.1`` once (the script does it when the folder is missing), and
it runs in a subprocess with that folder on ``PYTHONPATH`` and the project's torch. Each side
runs a warm-up pass (compilation, the first graph build) that is reported separately.

``--products P`` times ``P`` Hessian-vector products per side instead (the unit of both
computations; the full comparison at ``n = 1000`` takes hours on a 2-core CPU), and checks
the two sides agree on the gradient's Rayleigh quotient ``gᵀHg / gᵀg``.

``--per-probe B`` times the cost of one Hutchinson probe on each side: PyHessian's product
(``--products`` of them), and dynkit's three ways, a plain product ``H z``, a block of ``B``
probes with ``share_primal=True`` (one linearization per minibatch and block), and ``B``
forward-over-forward quadratic forms ``zᵀ H z`` (``trace(method="forward")``); compile (the
first call) and warm runs are timed separately, and each way is checked on ``gᵀHg / gᵀg``.

In the full comparison dynkit's trace uses ``--method`` (default ``forward``), and a second
dynkit trace deflated by the top-``k`` eigenvectors just computed (``deflate=eig``; not part of
the head-to-head, which uses the plain estimator and the same probe count on both sides) is
reported alongside.

Run: ``python benchmarks/hessian.py [--n 1000] [--k 5] [--rtol 0.01] [--products 3]
[--per-probe 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET = HERE / ".pyhessian"

PEER = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[2])
from torch_reference import CifarResNet
from pyhessian import hessian
blob = torch.load(sys.argv[1], weights_only=True)
net = CifarResNet(20); net.load_state_dict(blob["state"]); net.eval()
x, y, k, tol, probes = blob["x"], blob["y"], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
products, max_iter = int(sys.argv[6]), int(sys.argv[7])
crit = torch.nn.CrossEntropyLoss()
torch.manual_seed(0)
t = time.perf_counter(); h = hessian(net, crit, data=(x, y), cuda=False)
setup = time.perf_counter() - t
if products:   # the gradient's Rayleigh quotient g'Hg/g'g, `products` times
    from pyhessian.utils import hessian_vector_product
    g = [p.grad.detach().clone() for p in h.params]
    times = []
    for _ in range(products):
        t = time.perf_counter()
        hv = hessian_vector_product(h.gradsH, h.params, g)
        times.append(time.perf_counter() - t)
    q = sum(float((a * b).sum()) for a, b in zip(g, hv)) / sum(float((a * a).sum()) for a in g)
    print(json.dumps({"setup": setup, "hvp_s": float(np.mean(times)), "rayleigh": q}))
    sys.exit(0)
t = time.perf_counter(); vals, _ = h.eigenvalues(top_n=k, tol=tol, maxIter=max_iter)
t_eig = time.perf_counter() - t
if not probes:   # --eig-only
    print(json.dumps({"setup": setup, "eig_s": t_eig, "eigenvalues": vals}))
    sys.exit(0)
t = time.perf_counter(); tr = h.trace(maxIter=probes, tol=0.0)
t_tr = time.perf_counter() - t
print(json.dumps({"setup": setup, "eig_s": t_eig, "eigenvalues": vals, "trace_s": t_tr,
                  "trace": float(np.mean(tr)),
                  "trace_se": float(np.std(tr, ddof=1) / np.sqrt(len(tr))),
                  "probes": len(tr)}))
"""


def ensure_pyhessian() -> Path:
    if not (TARGET / "pyhessian" / "hessian.py").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(TARGET), "pyhessian==0.1"], check=True)
    return TARGET


def make_problem(n: int, path: Path):
    """Torch ResNet-20 (BN calibrated), inputs and labels, saved to ``path``."""
    import torch

    sys.path.insert(0, str(HERE.parent / "tests"))
    from torch_reference import CifarResNet

    torch.manual_seed(0)
    net = CifarResNet(20)
    x = torch.randn(n, 3, 32, 32)
    y = torch.randint(0, 10, (n,))
    for m in net.modules():   # running statistics = the batch moments of the data
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    torch.save({"state": net.state_dict(), "x": x, "y": y}, path)
    return net, x, y


def run_dynkit(net, x, y, k: int, lanczos_tol: float, rtol: float, batch: int,
               method: str, with_trace: bool = True) -> dict:
    import jax

    import dynkit as dk
    from dynkit.analyses import hessian

    model, params = dk.models.from_torch(net, x[:1])
    xj = x.permute(0, 2, 3, 1).numpy()
    yj = y.numpy()
    opts = {"loss": "cross_entropy", "batch_size": batch}
    t = time.perf_counter()   # warm-up: compile the product (one and ``block`` probes)
    op = hessian.hessian_operator(model, params, xj, yj, **opts)
    jax.block_until_ready(op.matvec(np.ones(op.dim, np.float32)))
    jax.block_until_ready(op.matmat(np.ones((4, op.dim), np.float32)))
    jax.block_until_ready(op.quadratic_forms(np.ones((1, op.dim), np.float32)))
    warm = time.perf_counter() - t
    t = time.perf_counter()
    eig = hessian.top_eigenvalues(op, k=k, tol=lanczos_tol)
    t_eig = time.perf_counter() - t
    ours = {"warmup": warm, "eig_s": t_eig, "eigenvalues": eig.eigenvalues.tolist(),
            "lanczos_steps": eig.num_iter, "converged": eig.converged, "params": op.dim}
    if not with_trace:
        return ours
    t = time.perf_counter()
    tr = hessian.trace(op, rtol=rtol, block=4, max_probes=5000, method=method)
    t_tr = time.perf_counter() - t
    t = time.perf_counter()
    dtr = hessian.trace(op, rtol=rtol, block=4, max_probes=5000, method=method, deflate=eig)
    t_dtr = time.perf_counter() - t
    return {**ours, "trace_s": t_tr, "trace": tr.value, "trace_se": tr.std_error, "probes": tr.num_probes,
            "deflated_s": t_dtr, "deflated_trace": dtr.value, "deflated_se": dtr.std_error,
            "deflated_probes": dtr.num_probes}


def run_dynkit_products(net, x, y, products: int, batch: int) -> dict:
    """Time ``products`` Hessian-vector products ``H g`` (``g`` the gradient) after a warm-up;
    the Rayleigh quotient ``gᵀHg / gᵀg`` is independent of the parameter order, so it checks
    the two sides compute the same Hessian."""
    import jax

    import dynkit as dk
    from dynkit.analyses import hessian

    model, params = dk.models.from_torch(net, x[:1])
    op = hessian.hessian_operator(model, params, x.permute(0, 2, 3, 1).numpy(), y.numpy(),
                                  loss="cross_entropy", batch_size=batch)
    t = time.perf_counter()
    _, g = op.value_and_gradient()
    jax.block_until_ready(op.matvec(g))
    warm = time.perf_counter() - t
    times = []
    for _ in range(products):
        t = time.perf_counter()
        hg = jax.block_until_ready(op.matvec(g))
        times.append(time.perf_counter() - t)
    g, hg = np.asarray(g, np.float64), np.asarray(hg, np.float64)
    return {"warmup": warm, "hvp_s": float(np.mean(times)), "rayleigh": float(g @ hg / (g @ g)),
            "params": op.dim}


def run_dynkit_per_probe(net, x, y, block: int, batch: int) -> dict:
    """Seconds per Hutchinson probe, three ways, each compiled by a first call that is timed
    apart; the probes are the gradient ``g`` and Rademacher vectors, and each way's
    ``gᵀHg / gᵀg`` is reported for the check against PyHessian."""
    import jax

    import dynkit as dk
    from dynkit.analyses import hessian

    model, params = dk.models.from_torch(net, x[:1])
    xj, yj = x.permute(0, 2, 3, 1).numpy(), y.numpy()
    opts = {"loss": "cross_entropy", "batch_size": batch}
    op = hessian.hessian_operator(model, params, xj, yj, **opts)
    shared = hessian.hessian_operator(model, params, xj, yj, share_primal=True, **opts)
    _, g = op.value_and_gradient()
    g = np.asarray(g, np.float32)
    z = np.random.default_rng(0).choice(np.array([-1.0, 1.0], np.float32), (block, op.dim))
    z[0] = g
    gg = float(np.float64(g) @ g)
    out = {"params": op.dim, "block": block}

    def timed(fn, arg):
        t = time.perf_counter()
        res = np.asarray(jax.block_until_ready(fn(arg)), np.float64)
        return res, time.perf_counter() - t

    _, out["hvp_compile_s"] = timed(op.matvec, g)
    hg, t = timed(op.matvec, g)
    out["hvp_s"], out["hvp_rayleigh"] = t, float(g @ hg / gg)
    _, out["block_compile_s"] = timed(shared.matmat, z[:2])
    hz, t = timed(shared.matmat, z)
    out["block_s"], out["block_rayleigh"] = t / block, float(g @ hz[0] / gg)
    _, out["forward_compile_s"] = timed(op.quadratic_forms, z[:1])
    forms, t = timed(op.quadratic_forms, z)
    out["forward_s"], out["forward_rayleigh"] = t / block, float(forms[0] / gg)
    out["block_vs_forward_max_rel"] = float(np.max(np.abs(np.sum(z * hz, 1) - forms))
                                            / np.max(np.abs(forms)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="inputs (CIFAR-sized)")
    ap.add_argument("--k", type=int, default=5, help="top eigenvalues")
    ap.add_argument("--tol", type=float, default=1e-3, help="PyHessian power-iteration tol")
    ap.add_argument("--maxiter", type=int, default=100,
                    help="PyHessian power iterations per eigenvalue (its default 100)")
    ap.add_argument("--eig-only", action="store_true",
                    help="top-k eigenvalues only, no trace (for an accuracy run at tight --tol)")
    ap.add_argument("--lanczos-tol", type=float, default=1e-3, help="dynkit relative residual")
    ap.add_argument("--rtol", type=float, default=0.01, help="trace relative standard error")
    ap.add_argument("--batch", type=int, default=1000, help="dynkit minibatch of a product")
    ap.add_argument("--method", default="forward", choices=["forward", "hvp"],
                    help="dynkit trace: quadratic forms forward-over-forward or z·Hz")
    ap.add_argument("--per-probe", type=int, default=0, metavar="B",
                    help="only time one probe per side (dynkit: plain, a block of B with "
                         "share_primal, B forward quadratic forms; PyHessian: --products)")
    ap.add_argument("--products", type=int, default=0,
                    help="only time this many Hessian-vector products per side (0: the full "
                         "top-k + trace comparison)")
    args = ap.parse_args(argv)
    target = ensure_pyhessian()
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "problem.pt"
        net, x, y = make_problem(args.n, blob)
        if args.per_probe:
            args.products = args.products or 2
            ours = run_dynkit_per_probe(net, x, y, args.per_probe, args.batch)
        elif args.products:
            ours = run_dynkit_products(net, x, y, args.products, args.batch)
        else:
            ours = run_dynkit(net, x, y, args.k, args.lanczos_tol, args.rtol, args.batch,
                              args.method, with_trace=not args.eig_only)
        print("dynkit", json.dumps(ours), flush=True)
        env = dict(os.environ, PYTHONPATH=str(target))
        out = subprocess.run([sys.executable, "-c", PEER, str(blob), str(HERE.parent / "tests"),
                              str(args.k), str(args.tol), str(ours.get("probes", 0)),
                              str(args.products), str(args.maxiter)],
                             capture_output=True, text=True, env=env, check=False)
        if out.returncode:
            raise SystemExit(f"PyHessian run failed:\n{out.stderr[-3000:]}")
        peer = json.loads(out.stdout.strip().splitlines()[-1])
    print("pyhessian", json.dumps(peer), flush=True)
    load = os.getloadavg()[0]
    if args.per_probe:
        print(f"\nResNet-20 ({ours['params']} params), n={args.n}, batch {args.batch}, "
              f"load {load:.1f}")
        print("| seconds per probe | warm | compile (first call) | / PyHessian | gᵀHg/gᵀg |")
        print("|---|---:|---:|---:|---|")
        p = peer["hvp_s"]
        print(f"| PyHessian HVP (mean of {args.products}) | {p:.2f} | graph {peer['setup']:.1f} "
              f"| 1.00 | {peer['rayleigh']:.5f} |")
        ways = (("dynkit HVP", "hvp"),
                (f"dynkit share_primal, block of {args.per_probe}", "block"),
                (f"dynkit forward quadratic form (x{args.per_probe})", "forward"))
        for name, key in ways:
            rel = abs(ours[f"{key}_rayleigh"] - peer["rayleigh"]) / abs(peer["rayleigh"])
            print(f"| {name} | {ours[f'{key}_s']:.2f} | {ours[f'{key}_compile_s']:.1f} | "
                  f"**{ours[f'{key}_s'] / p:.2f}** | {ours[f'{key}_rayleigh']:.5f} "
                  f"(rel. diff {rel:.1e}) |")
        print(f"block vs forward probe values: max rel. diff "
              f"{ours['block_vs_forward_max_rel']:.1e}")
        return
    if args.products:
        rel = abs(ours["rayleigh"] - peer["rayleigh"]) / abs(peer["rayleigh"])
        print(f"\nResNet-20 ({ours['params']} params), n={args.n}, load {load:.1f}")
        print("| quantity | dynkit (s) | PyHessian (s) | ratio | values |")
        print("|---|---:|---:|---:|---|")
        print(f"| one HVP (mean of {args.products}) | {ours['hvp_s']:.1f} | {peer['hvp_s']:.1f} | "
              f"{ours['hvp_s'] / peer['hvp_s']:.2f} | gᵀHg/gᵀg: dynkit {ours['rayleigh']:.5f}, "
              f"PyHessian {peer['rayleigh']:.5f} (rel. diff {rel:.1e}); warm-up: dynkit "
              f"{ours['warmup']:.1f} s, PyHessian graph {peer['setup']:.1f} s |")
        return
    a, b = np.sort(ours["eigenvalues"])[::-1], np.sort(peer["eigenvalues"])[::-1]
    rel = np.abs(a - b) / np.abs(b)
    print(f"\nResNet-20 ({ours['params']} params), n={args.n}, k={args.k}, load {load:.1f}")
    print("| quantity | dynkit (s) | PyHessian (s) | ratio | values |")
    print("|---|---:|---:|---:|---|")
    print(f"| top-{args.k} eigenvalues | {ours['eig_s']:.1f} | {peer['eig_s']:.1f} | "
          f"{ours['eig_s'] / peer['eig_s']:.2f} | dynkit {np.round(a, 4).tolist()} "
          f"({ours['lanczos_steps']} HVPs); PyHessian {np.round(b, 4).tolist()}; "
          f"max rel. diff {rel.max():.1e} |")
    if args.eig_only:
        return
    print(f"| trace ({ours['probes']} probes; dynkit {args.method}) | {ours['trace_s']:.1f} | {peer['trace_s']:.1f} | "
          f"{ours['trace_s'] / peer['trace_s']:.2f} | dynkit {ours['trace']:.3f} ± "
          f"{ours['trace_se']:.3f}; PyHessian {peer['trace']:.3f} ± {peer['trace_se']:.3f} |")
    total = (ours["eig_s"] + ours["trace_s"]) / (peer["eig_s"] + peer["trace_s"])
    print(f"| dynkit trace deflated by the top {args.k} (not head-to-head) | "
          f"{ours['deflated_s']:.1f} | | | {ours['deflated_trace']:.3f} ± "
          f"{ours['deflated_se']:.3f}, {ours['deflated_probes']} probes |")
    print(f"| total | {ours['eig_s'] + ours['trace_s']:.1f} | "
          f"{peer['eig_s'] + peer['trace_s']:.1f} | {total:.2f} | warm-up: dynkit compile "
          f"{ours['warmup']:.1f} s, PyHessian graph {peer['setup']:.1f} s |")


if __name__ == "__main__":
    main()
