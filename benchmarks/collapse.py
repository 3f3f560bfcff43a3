"""Streamed neural-collapse metrics vs a dense numpy baseline (same data, same run).

Synthetic features ``h = μ_y + σ ε`` (N x D, C classes) are generated batch by batch from
per-batch seeds, so the streamed run never holds more than one batch while the dense baseline
materialises all N x D features and D x D covariances. Time and peak traced memory
(``tracemalloc``, which sees numpy's buffers) are printed as a markdown table.

    python benchmarks/collapse.py                  # N=50000, D=2048, C=100
    python benchmarks/collapse.py --n 5000 --d 256 --c 10
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from dynkit.analyses.collapse import neural_collapse_stream


def make_batches(n, d, c, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.normal(size=(c, d))

    def batches():
        for k, start in enumerate(range(0, n, batch_size)):
            r = np.random.default_rng([seed, k])
            m = min(batch_size, n - start)
            y = r.integers(0, c, m)
            yield means[y] + r.normal(size=(m, d)), y

    return batches


def dense_baseline(h, y, W, b, c):
    """NC1-NC4 straight from the definitions with D x D matrices (Papyan et al. 2020)."""
    n = len(y)
    counts = np.bincount(y, minlength=c)
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mu = np.add.reduceat(h[order], starts, axis=0) / counts[:, None]
    mu_g = h.mean(0)
    hc = h - mu[y]
    sigma_w = hc.T @ hc / n
    M = mu - mu_g
    sigma_b = M.T @ M / c
    out = {"nc1": np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10, hermitian=True)) / c}
    norms = np.linalg.norm(M, axis=1)
    out["nc2_equinorm"] = norms.std() / norms.mean()
    cos = (M / norms[:, None]) @ (M / norms[:, None]).T
    out["nc2_equiangle"] = cos[np.triu_indices(c, 1)].std()
    out["nc3"] = np.sum((W / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2)
    ncc = np.argmax(2 * h @ mu.T - np.sum(mu**2, 1), axis=1)
    out["nc4"] = np.mean(ncc != np.argmax(h @ W.T + b, axis=1))
    return out


def measure(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--c", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=2000)
    args = ap.parse_args()
    n, d, c = args.n, args.d, args.c
    batches = make_batches(n, d, c, args.batch_size)
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(c, d)), rng.normal(size=c)

    def generate_only():
        return sum(len(y) for _, y in batches())

    def dense():
        hs, ys = zip(*batches())
        return dense_baseline(np.concatenate(hs), np.concatenate(ys), W, b, c)

    rows = []
    _, t_gen, m_gen = measure(generate_only)
    rows.append(("generate batches only (1 pass)", t_gen, m_gen))
    sub, t, m = measure(lambda: neural_collapse_stream(batches, W, b, method="subspace"))
    rows.append(("dynkit stream, subspace NC1 (2 passes)", t, m))
    den_s, t, m = measure(lambda: neural_collapse_stream(batches, W, b, method="dense"))
    rows.append(("dynkit stream, dense DxD scatter (2 passes)", t, m))
    ref, t, m = measure(dense)
    rows.append(("numpy dense baseline (all features in memory)", t, m))

    print(f"N={n}, D={d}, C={c}, batch={args.batch_size}, float64\n")
    print("| method | time (s) | peak traced memory (MiB) |")
    print("|---|---:|---:|")
    for name, t, m in rows:
        print(f"| {name} | {t:.1f} | {m:.0f} |")
    print("\n| metric | stream subspace | stream dense | numpy dense | max rel. diff |")
    print("|---|---:|---:|---:|---:|")
    for k, v in ref.items():
        diff = max(abs(sub[k] - v), abs(den_s[k] - v)) / max(abs(v), 1e-300)
        print(f"| {k} | {sub[k]:.10g} | {den_s[k]:.10g} | {v:.10g} | {diff:.1e} |")


if __name__ == "__main__":
    main()
