"""``dynkit kernel`` and ``dynkit kernel-regress``: an infinite-width kernel over a data set
into a Zarr store (resumable, in-process or on a Dask scheduler), and kernel regression from
the store without loading it.

The kernel is ``K(x, x)`` over the data's train inputs followed by its test inputs (both
splits, in that order); ``kernel-regress`` fits on the first ``--train`` rows and predicts
the rest.
"""

from __future__ import annotations

import json

import numpy as np

from dynkit.errors import InvalidArgumentError

__all__ = ["add_parsers", "load_data_spec"]


def load_data_spec(text: str):
    """``NAME[:N]`` -> ``(x, labels, n_train)``: the data set ``NAME`` of
    :func:`dynkit.data.load` (``mnist1d:N`` generates ``N`` sequences; for other sources
    ``N`` keeps the first ``N`` inputs), train inputs first, then test inputs."""
    from dynkit import data

    name, _, size = text.partition(":")
    try:
        n = int(size) if size else None
    except ValueError as exc:
        raise InvalidArgumentError(f"--data {text!r}: expected NAME or NAME:N (e.g. "
                                   f"mnist1d:60000)") from exc
    d = data.load(name, **({"num_samples": n} if name == "mnist1d" and n else {}))
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    n = len(x) if n is None else min(n, len(x))
    return x[:n], y[:n], min(len(d.x_train), n)


def cmd_kernel(args) -> int:
    from dynkit.theory import stax

    try:
        with open(args.spec) as f:
            spec = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the spec {args.spec}: {exc} (expected a JSON "
                                   f"list of [LayerName, {{kwargs}}] pairs)") from exc
    kernel_fn = stax.from_spec(spec)[2]
    x, _, n_train = load_data_spec(args.data)
    ks = stax.batch(kernel_fn, args.batch_size, store=args.out, scheduler=args.scheduler,
                    spec=spec, progress=not args.quiet, timeout=args.timeout)(
        x, None, tuple(args.get))
    k = getattr(ks, args.get[0])
    print(f"{args.out}: {'/'.join(args.get)} {k.shape[0]}x{k.shape[1]} "
          f"({n_train} train + {k.shape[0] - n_train} test inputs), tile {args.batch_size}, "
          f"{k.tiles_computed} tiles computed")
    return 0


def cmd_kernel_regress(args) -> int:
    from dynkit.theory.kernel_regress_store import matmul, solve
    from dynkit.theory.kernel_store_read import open_kernels

    ks = open_kernels(args.store)
    if args.get not in ks._fields:
        raise InvalidArgumentError(f"{args.store} holds {ks._fields}, not {args.get!r}")
    k = getattr(ks, args.get)
    if args.labels.endswith(".npy"):
        labels, n_train = np.load(args.labels, allow_pickle=False), None
    else:
        _, labels, n_train = load_data_spec(args.labels)
    n_train = args.train or n_train or int(0.8 * k.shape[0])
    if len(labels) != k.shape[0]:
        raise InvalidArgumentError(f"--labels has {len(labels)} entries, the kernel "
                                   f"{k.shape[0]} rows")
    classes = labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer)
    y = np.eye(int(labels.max()) + 1)[labels] - 0.1 if classes else labels.astype(np.float64)
    sol = solve(k.window(0, n_train, 0, n_train), y[:n_train], args.diag_reg, tol=args.tol,
                rank=args.rank)
    pred = matmul(k.window(n_train, k.shape[0], 0, n_train), sol.alpha)
    mse = float(np.mean((pred - y[n_train:]) ** 2))
    line = (f"kernel regression ({args.get}, diag_reg={args.diag_reg:g}): {n_train} train, "
            f"{len(pred)} test, CG {sol.iterations} passes, test MSE {mse:.4f}")
    if classes:
        acc = float(np.mean(pred.argmax(1) == labels[n_train:]))
        line += f", test accuracy {acc:.4f}"
    print(line)
    if args.out:
        np.save(args.out, pred)
    return 0


def add_parsers(sub) -> None:
    """Add ``kernel`` and ``kernel-regress`` to the CLI's subparsers."""
    k = sub.add_parser("kernel", help="an infinite-width kernel over a data set into a Zarr "
                                      "store (tiled, resumable, optionally on a Dask cluster)")
    k.add_argument("spec", help="JSON file: a stax spec, a list of [LayerName, {kwargs}]")
    k.add_argument("--data", required=True, help="NAME[:N], e.g. mnist1d:60000")
    k.add_argument("--out", required=True, help="the store: a directory or fsspec URL")
    k.add_argument("--scheduler", default=None,
                   help="a Dask scheduler address (tcp://host:8786); default in-process")
    k.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for --scheduler")
    k.add_argument("--batch-size", type=int, default=1000, help="rows per tile (chunk)")
    k.add_argument("--get", type=lambda t: [s for s in t.split(",") if s],
                   default=["nngp", "ntk"], help="comma-separated kernels (nngp,ntk)")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=cmd_kernel)

    r = sub.add_parser("kernel-regress", help="kernel regression from a stored kernel "
                                              "(conjugate gradients, streamed)")
    r.add_argument("store")
    r.add_argument("--labels", required=True,
                   help="NAME[:N] (the --data of `dynkit kernel`) or a .npy file of N labels")
    r.add_argument("--train", type=int, default=None,
                   help="the first TRAIN rows are the training set (default: the data's train "
                        "split, or 80%%)")
    r.add_argument("--get", default="ntk", choices=["nngp", "ntk"])
    r.add_argument("--diag-reg", type=float, default=1e-4,
                   help="relative ridge: lambda = diag_reg * tr(K)/N")
    r.add_argument("--tol", type=float, default=1e-10,
                   help="stop CG when each residual is below TOL times its target's norm")
    r.add_argument("--rank", type=int, default=100,
                   help="rank of the Nystrom preconditioner (one extra pass, N x RANK held)")
    r.add_argument("--out", default=None, help="save test predictions to this .npy file")
    r.set_defaults(func=cmd_kernel_regress)
