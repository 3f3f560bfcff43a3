"""The ``dynkit`` command line: ``train``, ``info``, ``metrics``, ``lmc``, ``figures``,
``reproduce``, ``demo``, ``compare``, ``sweep`` (:mod:`dynkit.cli_sweep`), ``kernel``,
``kernel-regress`` (:mod:`dynkit.cli_kernel`).

Every user error is a ``DynkitError``; the CLI prints it on one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from dynkit.errors import DynkitError, InvalidArgumentError
from dynkit.figures.claims import SIZES
from dynkit.registry import PluginWarning

__all__ = ["build_parser", "main", "model_for_data"]


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected comma-separated integers, "
                                         f"got {text!r}") from exc


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def model_for_data(arch: str, data, widths: list[int]):
    """Build architecture ``arch`` sized for ``data`` (input shape, number of outputs)."""
    from dynkit import models

    outputs = data.num_classes or int(np.prod(data.y_train.shape[1:]) or 1)
    if arch == "mlp":
        return models.mlp(int(np.prod(data.input_shape)), widths, outputs)
    if arch not in models.ARCHITECTURES:
        raise InvalidArgumentError(f"unknown --model {arch!r}; "
                                   f"known: {sorted(models.ARCHITECTURES)}")
    if len(data.input_shape) < 2:
        raise InvalidArgumentError(
            f"--model {arch} needs image-shaped inputs, but {data.name} gives {data.input_shape}; "
            "use --model mlp, or a data source with images (e.g. --data digits --image)"
        )
    return models.build({"arch": arch, "input_shape": list(data.input_shape),
                         "num_classes": outputs})


def _load_data(args):
    from dynkit import data

    kwargs = {"image": True} if getattr(args, "image", False) else {}
    return data.load(args.data, seed=args.data_seed, **kwargs)


def _torch_template(args, data=None):
    """``(module, model)`` of ``--torch-model``/``--input-shape``/``--torch-kwargs``: the user's
    module in eval mode and its traced graph (traced once for every checkpoint), or ``None``
    without ``--torch-model``. With data, the input shape defaults to the data's (in torch's
    layout) and must match it."""
    from dynkit.checkpoints.load import resolve_template
    from dynkit.models.torch_template import (
        parse_input_shape,
        torch_example_shape,
        torch_template,
    )

    if not args.torch_model:
        if args.input_shape or args.torch_kwargs:
            raise InvalidArgumentError("--input-shape and --torch-kwargs go with --torch-model "
                                       "module:Class")
        return None
    shape = parse_input_shape(args.input_shape) if args.input_shape else None
    if data is not None:
        want = torch_example_shape(data.input_shape)
        if shape is not None and want not in (shape, shape[1:]):
            raise InvalidArgumentError(
                f"--input-shape {args.input_shape} does not match the examples of --data "
                f"{data.name}, {want} in torch's layout (C, *spatial)"
                + ("; for image-shaped digits pass --image" if len(want) == 1 else ""))
        shape = want
    elif shape is None:
        raise InvalidArgumentError("--torch-model needs --input-shape, the shape of one input "
                                   "in torch's layout, e.g. 3,32,32")
    module, example_input = torch_template(args.torch_model, shape, args.torch_kwargs)
    with _quiet_tracer():
        return resolve_template(module, example_input)


@contextlib.contextmanager
def _quiet_tracer():
    """Keep torch.export's diagnostics (graph dumps, log lines) of a failed trace off the
    terminal: the CLI prints the tracer's reason as its one-line error."""
    import io
    import logging

    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _load(path, template):
    """A checkpoint, loaded into the traced ``--torch-model`` template if there is one."""
    from dynkit.checkpoints.load import load_into

    module, model = template or (None, None)
    return load_into(path, model, module)


def cmd_train(args) -> int:
    from dynkit.train import fit

    data = _load_data(args)
    model = model_for_data(args.model, data, args.widths)
    result = fit(model, data, optimizer=args.optimizer, lr=args.lr, lr_schedule=args.lr_schedule,
                 warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
                 batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                 out_dir=args.out, save_every=args.save_every, progress=not args.quiet)
    final = result.history[result.history["step"] == result.history["step"].max()]
    print(final.to_string(index=False))
    print(f"checkpoints and metrics.csv in {result.out_dir}")
    return 0


def cmd_info(args) -> int:
    ckpt = _load(args.checkpoint, _torch_template(args))
    model = ckpt.model
    print(f"file:       {ckpt.path}")
    print(f"arch:       {model.arch}")
    print(f"config:     {json.dumps(dict(model.config))}")
    print(f"step:       {ckpt.step}")
    print(f"parameters: {model.num_params():,}")
    if ckpt.meta:
        print(f"meta:       {json.dumps(ckpt.meta)}")
    print("layers:")
    for node in model.nodes:
        shapes = {k: tuple(np.shape(v)) for k, v in ckpt.params.get(node.name, {}).items()}
        print(f"  {node.name:<28} {node.op:<15} {shapes if shapes else ''}")
    return 0


def cmd_metrics(args) -> int:
    from dynkit.metrics import checkpoint_metrics, load_metrics, metrics_over_runs

    available = load_metrics()
    names = args.metrics or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidArgumentError(f"unknown metric(s) {unknown}; available: {available}")
    data = _load_data(args)
    template = _torch_template(args, data)
    paths = [Path(p) for p in args.path]
    client = None
    if args.scheduler:
        from dynkit.cluster import connect

        client = connect(args.scheduler, args.timeout)
    try:
        if len(paths) == 1 and not paths[0].is_dir() and client is None:
            tables = {None: checkpoint_metrics(_load(paths[0], template), data, names)}
        else:
            runs = {None if len(paths) == 1 else label: _run_or_checkpoint(path, template)
                    for label, path in _labels(paths).items()}
            tables = metrics_over_runs(runs, data, names, every=args.every, client=client)
    finally:
        if client is not None:
            client.close()
    for (label, table), path in zip(tables.items(), paths):
        _write_metrics(table, Path(args.out) if label is None else Path(args.out) / label,
                       plot=path.is_dir())
    return 0


def _labels(paths: list) -> dict:
    """``{label: path}``: each run folder's or checkpoint's name, numbered where names repeat."""
    names = [p.name if p.is_dir() else p.stem for p in paths]
    return {(n if names.count(n) == 1 else f"{i}_{n}"): p
            for i, (n, p) in enumerate(zip(names, paths))}


def _run_or_checkpoint(path: Path, template):
    """A run folder as a ``Run`` (with the ``--torch-model`` module), a file as one checkpoint."""
    from dynkit.checkpoints import load_run

    if not path.is_dir():
        return [_load(path, template)]
    module, model = template or (None, None)
    return replace(load_run(path, model=model), module=module)


def _write_metrics(table, out: Path, plot: bool) -> None:
    """``metrics.csv``/``metrics.json`` in ``out``, the table printed, and for a run one series
    plot per metric entry."""
    import pandas as pd

    from dynkit.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "metrics.csv") as fh:
        fh.write(table.to_csv(index=False).encode())
    with atomic_write(out / "metrics.json") as fh:
        fh.write(table.to_json(orient="records", indent=1).encode())
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print(table.to_string(index=False))
    if plot:
        from dynkit.figures.common import plot_series, save_figure

        for entry, metrics in table.attrs["entries"].items():
            sub = table[table["metric"].isin(metrics)]
            save_figure(plot_series(sub, metrics[:4], ["split", "layer", "q"]),
                        out / f"{entry}.png")
    print(f"wrote {out / 'metrics.csv'} and {out / 'metrics.json'}")


def cmd_lmc(args) -> int:
    import pandas as pd

    from dynkit.analyses import lmc
    from dynkit.figures.common import save_figure, save_table
    from dynkit.figures.lmc_plots import plot_interpolation, plot_layerwise_heatmap

    data = _load_data(args)
    template = _torch_template(args, data)
    a, b = _load(args.a, template), _load(args.b, template)
    if a.model != b.model:
        raise InvalidArgumentError(
            f"{args.a} ({a.model.arch}) and {args.b} ({b.model.arch}) have different "
            "architectures; mode connectivity needs two networks of the same architecture")
    model, pa, pb = a.model, a.params, b.params
    curves = [lmc.interpolate(model, pa, pb, data.x_train, data.y_train, args.alphas,
                              x_test=data.x_test, y_test=data.y_test).assign(alignment="none")]
    if args.align != "none":
        if args.align == "weights":
            perm = lmc.weight_matching(model, pa, pb)
        else:
            perm = lmc.activation_matching(model, pa, pb, data.x_train,
                                           objective=args.activation_objective)
        pb = lmc.apply_permutation(model, pb, perm)
        curves.append(lmc.interpolate(model, pa, pb, data.x_train, data.y_train, args.alphas,
                                      x_test=data.x_test, y_test=data.y_test)
                      .assign(alignment=args.align))
    curve = pd.concat(curves, ignore_index=True)
    barriers = (lmc.barrier_table(curve, definition=args.barrier, by="alignment")
                .sort_values(["alignment", "split"], ignore_index=True))
    print(barriers.to_string(index=False))
    layerwise = lmc.layerwise_interpolate(model, a.params, pb, data.x_train, data.y_train,
                                          alphas=min(args.alphas, 11))
    out = Path(args.out)
    paths = [save_table(curve, out / "interpolation.csv"),
             save_table(barriers, out / "barriers.csv"),
             save_table(layerwise, out / "layerwise.csv"),
             save_figure(plot_interpolation(curve), out / "interpolation.png"),
             save_figure(plot_layerwise_heatmap(layerwise), out / "layerwise.png")]
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_compare(args) -> int:
    from dynkit.analyses.similarity_layers import layer_similarity
    from dynkit.figures.common import save_table

    data = _load_data(args)
    a, b = _load(args.a, None), _load(args.b, None)
    x = data.x_test if len(data.x_test) else data.x_train
    S = layer_similarity(a.model, a.params, b.model, b.params, np.asarray(x)[:args.max_inputs],
                         measure=args.measure, batch_size=args.batch_size)
    print(f"{args.measure}: rows {args.a}, columns {args.b}")
    print(S.round(4).to_string())
    path = save_table(S.reset_index(), Path(args.out) / f"{args.measure}.csv")
    print(f"wrote {path}")
    return 0


def cmd_figures(args) -> int:
    from dynkit import figures

    if args.action == "list":
        from dynkit.registry import FIGURES

        print(_listing(FIGURES))
        return 0
    if not args.name:
        raise InvalidArgumentError("figures make needs a figure name; see `dynkit figures list`")
    for path in figures.make(args.name, args.out, size=_size(args)):
        print(path)
    return 0


def _size(args) -> str:
    """``--size``, or ``quick`` for ``--quick``; the two together must agree."""
    if args.quick and args.size not in (None, "quick"):
        raise InvalidArgumentError(f"--quick and --size {args.size} disagree; give one")
    return "quick" if args.quick else args.size or "full"


def cmd_reproduce(args) -> int:
    from dynkit.figures.reproduce import reproduce

    client = None
    if args.scheduler:
        from dynkit.cluster import connect

        client = connect(args.scheduler, args.timeout)
    try:
        report = reproduce(args.out, only=args.only, client=client, size=_size(args))
    finally:
        if client is not None:
            client.close()
    for r in report.records:
        verdict = "ERROR" if "error" in r else "PASS" if r["passed"] else "FAIL"
        print(f"{verdict:<5}  {r['name']:<28} {r['seconds']:>8.1f} s  {r['size']}")
    print(f"ran {len(report.ran)}, skipped {len(report.skipped)} (finished earlier); "
          f"report: {report.index}")
    for name in report.errors:
        error = next(r["error"] for r in report.records if r["name"] == name)
        print(f"dynkit: figure {name} raised {error}; traceback in "
              f"{Path(args.out) / (name + '.error.txt')}", file=sys.stderr)
    if report.failed:
        print(f"dynkit: claims fail: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args) -> int:
    from dynkit.figures.demo import run_demo

    index = run_demo(args.out, quick=args.quick, progress=not args.quiet)
    print(f"report written: {index} (and {index.with_name('README.md')})")
    return 0


def _listing(registry) -> str:
    """``name  help`` lines of every entry of a registry (loads its plugins)."""
    return "\n".join(f"  {e.name:<28} {e.help}" for e in registry.entries())


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose ``epilog`` may be a callable, called only when the help is
    printed: listing the registered metrics loads their plugins, which ``dynkit train`` and
    ``dynkit --help`` should not pay for."""

    def format_help(self) -> str:
        epilog = self.epilog
        if callable(epilog):
            self.epilog = epilog()
        try:
            return super().format_help()
        finally:
            self.epilog = epilog


def _metrics_epilog() -> str:
    from dynkit.registry import METRICS

    return "available metrics (entry-point group dynkit.metrics):\n" + _listing(METRICS)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dynkit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def torch_args(sp):
        sp.add_argument("--torch-model", metavar="MODULE:CLASS",
                        help="read a PyTorch state_dict into this nn.Module class, traced with "
                             "dynkit.models.from_torch; MODULE is a dotted module name "
                             "(importable from the current directory) or a .py file path, e.g. "
                             "mynets:ConvNet or ./nets.py:ConvNet. The file is loaded with "
                             "torch.load(weights_only=True): no code from it runs")
        sp.add_argument("--input-shape", metavar="SHAPE",
                        help="one input in torch's layout, e.g. 3,32,32 or 1,3,32,32 (a 4th "
                             "leading number is the batch axis); default: the data's")
        sp.add_argument("--torch-kwargs", metavar="JSON",
                        help="constructor arguments of --torch-model as a JSON object, "
                             "e.g. '{\"width\": 16}'")

    def data_args(sp):
        sp.add_argument("--data", default="digits", help="data source (see dynkit.data.names())")
        sp.add_argument("--data-seed", type=int, default=0)
        sp.add_argument("--image", action="store_true", help="image-shaped inputs (digits: 8x8x1)")

    t = sub.add_parser("train", help="train a model and write a checkpoint series")
    data_args(t)
    t.add_argument("--model", default="mlp")
    t.add_argument("--widths", type=_ints, default=[128, 128], help="hidden widths of an mlp")
    t.add_argument("--optimizer", default="momentum", choices=["sgd", "momentum", "adam", "adamw"])
    t.add_argument("--lr", type=float, default=0.05, help="(peak) learning rate")
    t.add_argument("--lr-schedule", default="constant",
                   choices=["constant", "cosine", "warmup_cosine", "step", "linear"],
                   help="learning-rate schedule over the run's steps: cosine and linear decay "
                        "to 0, warmup_cosine warms up linearly first, step multiplies by 0.1 "
                        "at 50%% and 75%% (see dynkit.train.make_schedule)")
    t.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up steps of warmup_cosine (default: 5%% of the steps)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-every", type=int, default=50, help="checkpoint every k steps")
    t.add_argument("--out", default="runs/mlp")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("checkpoint")
    torch_args(i)
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("metrics", help="metrics of checkpoints or run folders",
                       epilog=_metrics_epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("path", nargs="+",
                   help="checkpoint files or run folders; with several, each one's tables go "
                        "to OUT/<its name>/")
    data_args(m)
    torch_args(m)
    m.add_argument("--metrics", type=_names, default=None, help="comma-separated; default all")
    m.add_argument("--every", type=int, default=1, help="every k-th checkpoint of a run")
    m.add_argument("--out", default="dynkit-metrics")
    m.add_argument("--scheduler", default=None,
                   help="address of a dask.distributed scheduler (tcp://host:8786): each "
                        "checkpoint of every run is one task (workers must see the run "
                        "folders); default: "
                        "here, one after another")
    m.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for --scheduler")
    m.set_defaults(func=cmd_metrics)

    lm = sub.add_parser("lmc", help="linear mode connectivity of two checkpoints")
    lm.add_argument("a")
    lm.add_argument("b")
    data_args(lm)
    torch_args(lm)
    lm.add_argument("--align", choices=["none", "weights", "activations"], default="weights")
    lm.add_argument("--activation-objective", choices=["repair", "rebasin", "pearson_all_nodes"],
                    default="repair",
                    help="objective of --align activations: REPAIR's Pearson correlation "
                         "(default), Git Re-Basin's E[a b^T], or dynkit 0.1's correlation summed "
                         "over every node of a group")
    lm.add_argument("--alphas", type=int, default=21, help="number of points on the segment")
    lm.add_argument("--barrier", choices=["linear", "mean"], default="linear")
    lm.add_argument("--out", default="dynkit-lmc")
    lm.set_defaults(func=cmd_lmc)

    c = sub.add_parser("compare", help="layer x layer representation similarity of two "
                                       "checkpoints (CKA, SVCCA, PWCCA, Procrustes, RSA)")
    c.add_argument("a")
    c.add_argument("b")
    data_args(c)
    c.add_argument("--measure", default="cka",
                   choices=["cka", "cka_debiased", "cka_rbf", "minibatch_cka", "svcca", "pwcca",
                            "procrustes", "rsa"],
                   help="see dynkit.analyses.similarity (minibatch_cka streams; the others "
                        "hold every layer's activations)")
    c.add_argument("--max-inputs", type=int, default=1000, help="test inputs used")
    c.add_argument("--batch-size", type=int, default=256)
    c.add_argument("--out", default="dynkit-compare")
    c.set_defaults(func=cmd_compare)

    f = sub.add_parser("figures", help="paper figures: list | make NAME (entry-point group "
                                       "dynkit.figures)")
    f.add_argument("action", choices=["list", "make"])
    f.add_argument("name", nargs="?")
    f.add_argument("--quick", action="store_true", help="small CPU-minute version")
    f.add_argument("--size", choices=SIZES, default=None,
                   help="quick | full (default; <= 30 min on 2 CPU cores) | paper (the "
                        "paper's scale, for a GPU; figures that have one)")
    f.add_argument("--out", default="dynkit-figures")
    f.set_defaults(func=cmd_figures)

    r = sub.add_parser("reproduce", help="draw every paper figure, check each one's claim, "
                                         "write a PASS/FAIL report (resumable); exit 1 if a "
                                         "claim fails or a figure raises")
    r.add_argument("--quick", action="store_true", help="the CPU-minute sizes")
    r.add_argument("--size", choices=SIZES, default=None,
                   help="quick | full (default) | paper (figures without a paper-scale "
                        "configuration run at full)")
    r.add_argument("--only", type=_names, default=None, help="comma-separated figure names")
    r.add_argument("--out", default="dynkit-reproduce")
    r.add_argument("--scheduler", default=None,
                   help="address of a dask.distributed scheduler: each figure is one task "
                        "(workers must share --out); default: run here, one after another")
    r.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for --scheduler")
    r.set_defaults(func=cmd_reproduce)

    d = sub.add_parser("demo", help="train two seeds on digits and write a report of every metric")
    d.add_argument("--out", default="dynkit-report")
    d.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    from dynkit.cli_kernel import add_parsers as add_kernel_parsers
    from dynkit.cli_sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    add_kernel_parsers(sub)
    return p


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """One line ``dynkit: warning: ...`` for a plugin that failed to load; the default
    format for every other warning."""
    if issubclass(category, PluginWarning):
        return f"dynkit: warning: {message}\n"
    return _default_format_warning(message, category, filename, lineno, line)


_default_format_warning = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    previous, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except DynkitError as exc:
        print(f"dynkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynkit: interrupted; completed checkpoints are kept", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
