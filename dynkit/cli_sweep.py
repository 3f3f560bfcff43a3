"""``dynkit sweep lr-transfer``: the learning-rate transfer sweep of
``dynkit.analyses.scaling_transfer.lr_transfer`` from the command line, resumable.

Example: ``dynkit sweep lr-transfer --model mlp --widths 64,128,256 --lrs 2^-8:2^0
--parametrization mup --out sweeps/mup`` writes one run folder per (width, lr, seed) cell,
``lr_transfer.csv`` (one row per cell) and ``optimum.csv`` (optimal log2 lr per width) under
``--out``; re-running the same command trains only the cells that are missing. ``--scheduler ADDR``
runs each width (or depth) as one task on a Dask cluster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dynkit.errors import InvalidArgumentError

__all__ = ["PARAMETRIZATIONS", "add_parser", "cmd_sweep"]

#: ``--parametrization`` names -> ``dynkit.models`` parameterization
PARAMETRIZATIONS = {"sp": "standard", "standard": "standard", "ntk": "ntk",
                    "meanfield": "meanfield", "mup": "mup"}


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from exc


def builder(args, data):
    """``(axis, sizes, size -> Model)`` for the parsed arguments."""
    import numpy as np

    from dynkit import models

    if args.parametrization not in PARAMETRIZATIONS:
        raise InvalidArgumentError(f"unknown --parametrization {args.parametrization!r}; "
                                   f"known: {sorted(PARAMETRIZATIONS)} (sp = standard)")
    param = PARAMETRIZATIONS[args.parametrization]
    in_dim, out_dim = int(np.prod(data.input_shape)), data.num_classes or 1
    if len(data.input_shape) != 1:
        raise InvalidArgumentError(f"sweep models are MLPs on flat inputs; {data.name} gives "
                                   f"{data.input_shape} (drop --image)")
    if (args.widths is None) == (args.depths is None):
        raise InvalidArgumentError("give exactly one of --widths (a width sweep) or --depths "
                                   "(a depth sweep of residual MLPs)")
    if args.model == "mlp" and args.depths is None:
        return "width", args.widths, lambda n: models.mlp(
            in_dim, [n] * args.hidden_layers, out_dim, parameterization=param)
    if args.model == "resmlp":
        if args.depths is not None:
            return "depth", args.depths, lambda L: models.residual_mlp(
                in_dim, args.width, L, out_dim, parameterization=param,
                branch_scale=args.branch_scale)
        return "width", args.widths, lambda n: models.residual_mlp(
            in_dim, n, args.blocks, out_dim, parameterization=param,
            branch_scale=args.branch_scale)
    raise InvalidArgumentError(f"--model {args.model!r} with --depths: depth sweeps use "
                               "--model resmlp (residual MLP blocks)")


def cmd_sweep(args) -> int:
    from dynkit import data as dkdata
    from dynkit.analyses.scaling_transfer import lr_grid, lr_transfer, optimal_lr
    from dynkit.figures.common import save_table

    lrs = lr_grid(args.lrs)
    data = dkdata.load(args.data, seed=args.data_seed)
    axis, sizes, build = builder(args, data)
    seeds = list(range(args.seeds))
    client = None
    if args.scheduler:
        from dynkit.cluster import connect

        client = connect(args.scheduler, args.timeout)
    try:
        df = lr_transfer(build, sizes, lrs, data, args.steps, seeds, out=args.out, axis=axis,
                         optimizer=args.optimizer, batch_size=args.batch_size,
                         lr_multipliers=args.lr_multipliers, base_width=args.base_width,
                         progress=not args.quiet, client=client)
    finally:
        if client is not None:
            client.close()
    opt = optimal_lr(df, axis)
    out = Path(args.out)
    save_table(df, out / "lr_transfer.csv")
    save_table(opt, out / "optimum.csv")
    print(opt.to_string(index=False))
    print(f"written: {out / 'lr_transfer.csv'}, {out / 'optimum.csv'}")
    return 0


def add_parser(sub) -> None:
    """Add ``sweep lr-transfer`` to the ``dynkit`` subcommands ``sub``."""
    s = sub.add_parser("sweep", help="hyperparameter sweeps: lr-transfer (resumable)",
                       description=__doc__.splitlines()[0])
    kinds = s.add_subparsers(dest="sweep", required=True)
    t = kinds.add_parser("lr-transfer", help="loss vs log2 lr per width or depth; the optimum",
                         description=__doc__)
    t.add_argument("--model", default="mlp", choices=["mlp", "resmlp"])
    t.add_argument("--widths", type=_ints, help="strictly increasing widths, e.g. 64,128,256")
    t.add_argument("--depths", type=_ints, help="strictly increasing numbers of residual "
                                                "blocks (--model resmlp), e.g. 2,4,8")
    t.add_argument("--lrs", default="2^-8:2^0",
                   help="2^lo:2^hi (powers of two), 2^lo:2^hi:step or a comma list")
    t.add_argument("--parametrization", default="mup",
                   help=f"one of {sorted(PARAMETRIZATIONS)} (sp = standard)")
    t.add_argument("--branch-scale", default="none", choices=["none", "depth"],
                   help="residual branch multiplier: 1 or 1/sqrt(L) (Depth-muP)")
    t.add_argument("--hidden-layers", type=int, default=2, help="hidden layers of an mlp")
    t.add_argument("--width", type=int, default=128, help="width of a depth sweep")
    t.add_argument("--blocks", type=int, default=4, help="residual blocks of a width sweep")
    t.add_argument("--lr-multipliers", action="store_true",
                   help="per-layer muP / Depth-muP rates (dynkit.models.lr_multipliers)")
    t.add_argument("--base-width", type=float, default=1.0)
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "momentum", "adam", "adamw"])
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--seeds", type=int, default=2, help="number of seeds (0..k-1)")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--data", default="digits", help="data source (see dynkit.data.names())")
    t.add_argument("--data-seed", type=int, default=0)
    t.add_argument("--out", default="sweeps/lr-transfer")
    t.add_argument("--scheduler", default=None,
                   help="address of a dask.distributed scheduler (tcp://host:8786): each "
                        "width/depth (its cells, trained together) is one task; workers must "
                        "see --out. Default: here, one size after another")
    t.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for --scheduler")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_sweep)
