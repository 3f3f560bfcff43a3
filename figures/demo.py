"""``dynkit demo``: the main job. Train a small MLP on digits for two seeds, evaluate every
registered metric along both runs, and write a report folder (HTML + Markdown, PNG, CSV)."""

from __future__ import annotations

import html
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import dynkit as dk
from dynkit.analyses import lmc
from dynkit.figures.common import plot_series, save_figure, save_table
from dynkit.figures.lmc_plots import plot_interpolation
from dynkit.io import atomic_write
from dynkit.metrics import load_metrics, metrics_over_run
from dynkit.train import fit

__all__ = ["SEEDS", "DemoConfig", "Section", "run_demo"]

SEEDS = (0, 1)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick`` shrinks them for tests."""

    widths: tuple[int, ...] = (128, 128)
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.05
    save_every: int = 60
    seeds: tuple[int, ...] = SEEDS

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(widths=(32,), epochs=4, save_every=20)


def run_demo(out_dir: str | Path = "dynkit-report", quick: bool = False, progress: bool = True):
    """Train, measure and report; returns the path of ``index.html``."""
    cfg = DemoConfig.quick() if quick else DemoConfig()
    out = Path(out_dir)
    started = time.perf_counter()
    data = dk.data.load("digits", seed=0)
    model = dk.models.mlp(data.input_shape[0], list(cfg.widths), data.num_classes)
    histories, tables, finals = [], [], []
    names = load_metrics()
    for seed in cfg.seeds:
        run_dir = out / "runs" / f"seed{seed}"
        if run_dir.exists():  # the demo owns its report folder: start each run afresh
            shutil.rmtree(run_dir)
        result = fit(model, data, optimizer="momentum", lr=cfg.lr, batch_size=cfg.batch_size,
                     epochs=cfg.epochs, seed=seed, out_dir=run_dir, save_every=cfg.save_every,
                     progress=progress, resume=False)
        histories.append(result.history.assign(seed=seed))
        finals.append(result.params)
        tables.append(metrics_over_run(run_dir, data, names, progress=progress)
                      .assign(seed=seed))
    history = pd.concat(histories, ignore_index=True)
    metrics = pd.concat(tables, ignore_index=True)
    sections = [_learning_curves(out, history)]
    for group, produced in tables[0].attrs["entries"].items():
        sections.append(_metric_section(out, group, metrics[metrics["metric"].isin(produced)]))
    sections.append(_lmc_section(out, model, data, *finals[:2]))
    elapsed = time.perf_counter() - started
    return _write_pages(out, model, data, cfg, sections, elapsed)


@dataclass(frozen=True)
class Section:
    title: str
    text: str
    figure: Path | None
    table: pd.DataFrame
    csv: Path


def _learning_curves(out: Path, history: pd.DataFrame) -> Section:
    tidy = history.melt(id_vars=["step", "epoch", "split", "seed"], value_vars=["loss", "accuracy"],
                        var_name="metric").dropna(subset=["value"])
    fig = plot_series(tidy, ["loss", "accuracy"], ["seed", "split"])
    last = tidy[tidy["step"] == tidy["step"].max()]
    return Section("Learning curves", "Loss and accuracy on the train and test splits.",
                   save_figure(fig, out / "learning_curves.png"),
                   last.pivot_table(index=["metric", "split"], columns="seed", values="value"),
                   save_table(history, out / "tables" / "learning_curves.csv"))


def _metric_section(out: Path, group: str, df: pd.DataFrame) -> Section:
    entry = dk.registry.METRICS.get(group)
    df = df.dropna(axis=1, how="all")
    metrics = list(dict.fromkeys(df["metric"]))
    shown = metrics[:4]
    fig = plot_series(df, shown, ["seed", "split", "layer"])
    index = ["metric"] + [c for c in ("split", "layer") if c in df]
    last = df[df["step"] == df["step"].max()]
    return Section(f"Metric: {group}", entry.help, save_figure(fig, out / f"metric_{group}.png"),
                   last.pivot_table(index=index, columns="seed", values="value"),
                   save_table(df, out / "tables" / f"{group}.csv"))


def _lmc_section(out: Path, model, data, params_a, params_b) -> Section:
    curves = []
    for alignment, pb in (("none", params_b), ("weights", lmc.apply_permutation(
            model, params_b, lmc.weight_matching(model, params_a, params_b)))):
        curves.append(lmc.interpolate(model, params_a, pb, data.x_train, data.y_train, 11,
                                      x_test=data.x_test, y_test=data.y_test)
                      .assign(alignment=alignment))
    curve = pd.concat(curves, ignore_index=True)
    table = lmc.barrier_table(curve, by="alignment").set_index(["alignment", "split"])
    return Section("Linear mode connectivity of the two seeds",
                   "Loss along θ = (1 − α) θ_seed0 + α θ_seed1, naive and after Git Re-Basin "
                   "weight matching (Ainsworth et al. 2023); barrier = max_α [L(α) − "
                   "((1 − α) L(0) + α L(1))] (Frankle et al. 2020).",
                   save_figure(plot_interpolation(curve), out / "lmc_interpolation.png"),
                   table, save_table(curve, out / "tables" / "lmc_interpolation.csv"))


def _markdown_table(df: pd.DataFrame) -> str:
    flat = df.reset_index() if any(n is not None for n in df.index.names) else df
    cols = [str(c) if not isinstance(c, int) else f"seed {c}" for c in flat.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in flat.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_pages(out: Path, model, data, cfg: DemoConfig, sections, elapsed: float) -> Path:
    intro = (f"MLP {data.input_shape[0]}-{'-'.join(map(str, cfg.widths))}-{data.num_classes} "
             f"({model.num_params():,} parameters) trained on {data.name} "
             f"({len(data.x_train)} train / {len(data.x_test)} test) for {cfg.epochs} epochs, "
             f"seeds {', '.join(map(str, cfg.seeds))}; report made in {elapsed:.0f} s.")
    md = ["# dynkit demo report", "", intro, ""]
    body = [f"<h1>dynkit demo report</h1><p>{html.escape(intro)}</p>"]
    for s in sections:
        rel_png = s.figure.relative_to(out).as_posix() if s.figure else None
        rel_csv = s.csv.relative_to(out).as_posix()
        md += [f"## {s.title}", "", s.text, ""]
        body.append(f"<h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>")
        if rel_png:
            md += [f"![{s.title}]({rel_png})", ""]
            body.append(f'<img src="{rel_png}" alt="{html.escape(s.title)}">')
        md += ["Final checkpoint:", "", _markdown_table(s.table), "",
               f"Data: [{rel_csv}]({rel_csv})", ""]
        body.append(s.table.to_html(float_format=lambda v: f"{v:.4g}"))
        body.append(f'<p>Data: <a href="{rel_csv}">{rel_csv}</a></p>')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>dynkit demo report</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
            "img{max-width:100%}table{border-collapse:collapse}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    with atomic_write(out / "README.md") as fh:
        fh.write("\n".join(md).encode())
    index = out / "index.html"
    with atomic_write(index) as fh:
        fh.write(page.encode())
    return index
