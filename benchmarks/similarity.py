"""Representation-similarity benchmarks (issue #16), two parts, one run.

1. *Streamed linear CKA*: two ``N x D`` float32 activation sets, generated batch by batch from
   per-batch seeds (a shared latent, so the CKA is far from 0 and 1), fed to
   ``streamed_linear_cka`` (exact full-data CKA from feature moments). Baselines on the same
   data: ``cka(X, Y)`` on the materialised matrices (feature space, float64), and the Gram
   form of Kornblith et al.'s colab (``N x N`` kernels, HSIC by centering), the only way the
   usual per-kernel codes compute CKA, for the N where it fits in memory. Time and peak traced
   memory (``tracemalloc`` sees numpy's buffers).
2. *Layer x layer minibatch CKA* of a ResNet-20 (random weights, 32x32x3 inputs): dynkit's
   ``layer_similarity`` (one forward pass per batch, one Gram per layer, one matrix product
   for every pair) against the straightforward per-pair code of the PyTorch packages (same
   forward pass per batch, then for every pair of layers both Gram matrices and the three
   HSICs from scratch). Same inputs, same batches; the two matrices must agree. Timed
   without ``tracemalloc`` (its hooks slow JAX's Python side).

    python benchmarks/similarity.py                        # the issue's sizes
    python benchmarks/similarity.py --n 20000 --d 1024 --resnet-n 2000
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import jax
import numpy as np

import dynkit as dk
from dynkit.analyses.similarity import cka
from dynkit.analyses.similarity_layers import _batches, layer_similarity
from dynkit.analyses.similarity_stream import streamed_linear_cka


def pair_batches(n, d, batch_size, seed=0):
    mix = np.random.default_rng(seed).normal(size=(2, 64, d)).astype(np.float32)
    for k, s in enumerate(range(0, n, batch_size)):
        r = np.random.default_rng([seed, k])
        m = min(batch_size, n - s)
        z = r.normal(size=(m, 64)).astype(np.float32)
        x = np.maximum(z @ mix[0], 0) + r.normal(size=(m, d)).astype(np.float32)
        y = np.tanh(z @ mix[1]) + r.normal(size=(m, d)).astype(np.float32)
        yield x, y


def measure(fn, *args):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak / 2**20


def gram_cka(X, Y):
    """Kornblith et al. colab-style: N x N linear kernels, centered, HSIC ratio."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    K, L = X @ X.T, Y @ Y.T
    for G in (K, L):
        G -= G.mean(0, keepdims=True)
        G -= G.mean(1, keepdims=True)
    return float(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))


def part_stream(ns, d, batch_size, dense_max, gram_max):
    print(f"\n### streamed linear CKA, D = {d}, float32 inputs, batch {batch_size}\n")
    print("| N | streamed (s) | streamed peak (MiB) | dense feature-space (s) | dense peak (MiB) "
          "| Gram N x N (s) | Gram peak (MiB) | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        val, t_s, m_s = measure(streamed_linear_cka, pair_batches(n, d, batch_size))
        cells = ["–"] * 4
        diff = 0.0
        if n <= dense_max:
            parts = list(pair_batches(n, d, batch_size))
            X, Y = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
            del parts
            ref, t_d, m_d = measure(cka, X, Y)
            cells[:2] = [f"{t_d:.2f}", f"{m_d:.0f}"]
            diff = max(diff, abs(ref - val))
            if n <= gram_max:
                ref2, t_g, m_g = measure(gram_cka, X, Y)
                cells[2:] = [f"{t_g:.2f}", f"{m_g:.0f}"]
                diff = max(diff, abs(ref2 - val))
            del X, Y
        print(f"| {n} | {t_s:.2f} | {m_s:.0f} | " + " | ".join(cells) + f" | {diff:.1e} |",
              flush=True)


def per_pair(model, params, x, names, batch_size):
    """The straightforward loop: per batch, per pair, both Grams and three HSICs anew."""
    L = len(names)
    xy, xx, yy = np.zeros((L, L)), np.zeros((L, L)), np.zeros((L, L))

    def hsic1(K, M):
        n = K.shape[0]
        K, M = K.copy(), M.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(M, 0)
        k1, m1 = K.sum(1), M.sum(1)
        return (np.sum(K * M) + k1.sum() * m1.sum() / ((n - 1) * (n - 2))
                - 2 / (n - 2) * k1 @ m1) / (n * (n - 3))

    for acts in _batches(model, params, x, names, batch_size):
        acts = [a.astype(np.float64) for a in acts]
        for i in range(L):
            for j in range(L):
                K, M = acts[i] @ acts[i].T, acts[j] @ acts[j].T
                xy[i, j] += hsic1(K, M)
                xx[i, j] += hsic1(K, K)
                yy[i, j] += hsic1(M, M)
    return xy / np.sqrt(xx * yy)


def part_layers(n, batch_size):
    model = dk.models.resnet20()
    params = model.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(n, 32, 32, 3)).astype(np.float32)
    names = model.layer_names()
    layer_similarity(model, params, x=x[:batch_size], batch_size=batch_size)  # compile
    t = time.perf_counter()
    S = layer_similarity(model, params, x=x, batch_size=batch_size).to_numpy()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    R = per_pair(model, params, x, names, batch_size)
    t_pair = time.perf_counter() - t
    print(f"\n### layer x layer minibatch CKA, ResNet-20, {len(names)} layers, N = {n}, "
          f"batch {batch_size}\n")
    print("| code | time (s) |\n|---|---:|")
    print(f"| dynkit layer_similarity | {t_ours:.1f} |")
    print(f"| per-pair recomputation | {t_pair:.1f} |")
    print(f"\nper-pair / dynkit = {t_pair / t_ours:.1f}x; max |difference| = "
          f"{np.max(np.abs(S - R)):.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000, help="largest N of part 1")
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=2500)
    p.add_argument("--dense-max", type=int, default=10_000,
                   help="largest N for the in-memory baselines")
    p.add_argument("--gram-max", type=int, default=5_000, help="largest N for the Gram form")
    p.add_argument("--resnet-n", type=int, default=10_000)
    p.add_argument("--resnet-batch", type=int, default=500)
    p.add_argument("--skip-stream", action="store_true")
    p.add_argument("--skip-layers", action="store_true")
    args = p.parse_args()
    if not args.skip_stream:
        ns = sorted({n for n in (args.n // 10, args.n // 4, args.n) if n >= 4})
        part_stream(ns, args.d, args.batch_size, args.dense_max, args.gram_max)
    if not args.skip_layers:
        part_layers(args.resnet_n, args.resnet_batch)


if __name__ == "__main__":
    main()
