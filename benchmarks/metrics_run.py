"""``dynkit metrics`` over a training run: time of the first checkpoint and per later checkpoint.

Trains (once) an MLP 64-64-64-10 on the sklearn digits with ``dynkit.train.fit``, saving 50
checkpoints, then times ``metrics_over_run(load_run(run), data, names)`` in-process, what
``dynkit metrics RUN --metrics collapse,pathnorm,ntk`` runs. The start of each checkpoint is
taken when the run loads it (``dynkit.checkpoints.run.load_checkpoint``, wrapped), so the
first checkpoint's time includes every compilation and the later ones show what a checkpoint
costs once the compiled programs are reused. The script only uses names that exist before
and after issue #12, so the same file times any dynkit tree (``PYTHONPATH``).

    python benchmarks/metrics_run.py --make-run /tmp/run50      # train the run once
    python benchmarks/metrics_run.py --time /tmp/run50          # time; prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

NAMES = ("collapse", "pathnorm", "ntk")


def make_run(out: Path, checkpoints: int = 50, save_every: int = 2) -> Path:
    """Train an MLP 64-64-64-10 on digits (SGD, lr 0.1, batch 64), saving ``checkpoints``
    checkpoints: at step 0 and every ``save_every`` steps up to the last."""
    import dynkit as dk
    from dynkit.train import fit

    data = dk.data.load("digits", seed=0)
    model = dk.models.mlp(64, [64, 64], 10)
    steps = (checkpoints - 1) * save_every
    fit(model, data, optimizer="sgd", lr=0.1, batch_size=64, steps=steps, save_every=save_every,
        out_dir=out, progress=False)
    return out


def time_metrics(run_dir: Path, names=NAMES) -> dict:
    """Run the metrics over the run; seconds of the first checkpoint, the mean and median of
    the later ones, and the total."""
    import dynkit as dk
    import dynkit.checkpoints.run as run_module
    from dynkit.metrics import load_metrics, metrics_over_run

    load_metrics()
    data = dk.data.load("digits", seed=0)
    starts: list[float] = []
    real = run_module.load_checkpoint

    def timed_load(path, **kw):
        starts.append(time.perf_counter())
        return real(path, **kw)

    run_module.load_checkpoint = timed_load
    try:
        t0 = time.perf_counter()
        table = metrics_over_run(dk.load_run(run_dir), data, list(names), progress=False)
        end = time.perf_counter()
    finally:
        run_module.load_checkpoint = real
    per = [b - a for a, b in zip(starts, starts[1:] + [end])]
    later = sorted(per[1:])
    return {"dynkit": str(Path(dk.__file__).parents[1]), "checkpoints": len(per),
            "rows": len(table), "first_s": per[0], "later_mean_s": sum(later) / len(later),
            "later_median_s": later[len(later) // 2], "total_s": end - t0,
            "machine": platform.processor() or platform.machine()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--make-run", type=Path, help="train the 50-checkpoint run into this folder")
    p.add_argument("--time", type=Path, help="time the metrics over this run folder")
    p.add_argument("--metrics", default=",".join(NAMES))
    args = p.parse_args(argv)
    if args.make_run:
        make_run(args.make_run)
    if args.time:
        print(json.dumps(time_metrics(args.time, args.metrics.split(","))))


if __name__ == "__main__":
    main()
