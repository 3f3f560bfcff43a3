"""``dynkit reproduce``: draw every registered figure, check its paper's claim on its data, and
write a PASS/FAIL report (``index.html`` and ``README.md``) next to the PNGs and CSVs.

Each finished figure leaves three files in the output folder: ``<name>.png``, ``<name>.csv`` and
``<name>.claim.json`` (its claim record: dynkit version, size, seconds, verdict), the record
written last. A later run skips a figure whose three files exist for the same dynkit version and
size (it re-checks the claim on the stored CSV, which costs milliseconds), so an interrupted run
resumes where it stopped. A figure that raises does not stop the run: its row says ERROR with
the exception, its traceback goes to ``<name>.error.txt``, no record is written (the next run
draws it again) and the run fails. With a ``dask.distributed`` client the figures run as Dask tasks
(the workers must see the output folder); without one they run here, one after another.
"""

from __future__ import annotations

import html
import json
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

import dynkit
from dynkit.errors import InvalidArgumentError
from dynkit.figures import make
from dynkit.figures.claims import SIZES, resolve_size
from dynkit.io import atomic_write
from dynkit.registry import FIGURES

__all__ = ["Report", "figure_record", "figure_size", "reproduce", "run_figure", "try_figure"]


def figure_size(name: str, size: str) -> str:
    """The size figure ``name`` runs at when ``size`` is asked: ``size`` itself, except that a
    figure with no paper-scale configuration runs ``"paper"`` at ``"full"``."""
    if size not in SIZES:
        raise InvalidArgumentError(f"size must be one of {SIZES}, got {size!r}")
    sizes = getattr(FIGURES.get(name).func, "sizes", ("quick", "full"))
    return size if size in sizes else "full"


def _paper(help_: str) -> str:
    """The last parenthesized reference of a figure's help line (``"Papyan et al. 2020"``)."""
    found = re.findall(r"\(([^()]*\d{4}[^()]*)\)", help_)
    return found[-1] if found else ""


def _record_head(name: str, size: str, seconds: float) -> tuple[dict, object]:
    """The fields every record of figure ``name`` has, and the figure's claim (or ``None``)."""
    fig = FIGURES.get(name).func
    return ({"name": name, "version": dynkit.__version__, "size": size,
             "seconds": round(float(seconds), 2), "paper": _paper(fig.help)},
            getattr(fig, "claim", None))


def figure_record(name: str, out: Path, size: str, seconds: float) -> dict:
    """The claim record of figure ``name`` from its CSV under ``out``: the claim checked on the
    table as written (a figure without a claim fails, saying so)."""
    record, claim = _record_head(name, size, seconds)
    if claim is None:
        return record | {"passed": False, "statement": "no claim registered",
                         "claim_size": "", "measured": {}, "checks": {"has a claim": False}}
    result = claim(pd.read_csv(out / f"{name}.csv"))
    return record | {"passed": result.passed, "statement": result.statement,
                     "claim_size": result.size, "measured": result.measured,
                     "checks": result.checks}


def _write_json(path: Path, obj) -> None:
    with atomic_write(path) as fh:
        fh.write(json.dumps(obj, indent=1, allow_nan=True).encode())


def run_figure(name: str, out: str | Path, size: str = "full") -> dict:
    """Draw figure ``name`` at ``size`` (writing ``<name>.png`` and ``<name>.csv`` under
    ``out``), check its claim and write ``<name>.claim.json``; returns the record. This is the
    Dask task."""
    out = Path(out)
    start = time.perf_counter()
    written = make(name, out, size=size)
    expected = [out / f"{name}.png", out / f"{name}.csv"]
    if [Path(p) for p in written] != expected:
        raise InvalidArgumentError(f"figure {name!r} wrote {written}, expected {expected} "
                                   "(a PaperFigure writes <name>.png and <name>.csv)")
    record = figure_record(name, out, size, time.perf_counter() - start)
    _write_json(out / f"{name}.claim.json", record)
    (out / f"{name}.error.txt").unlink(missing_ok=True)
    return record


def try_figure(name: str, out: str | Path, size: str = "full") -> dict:
    """``run_figure``, or, if the figure raises, an error record (``passed`` false, ``error``
    the exception) with the traceback in ``<name>.error.txt`` and no ``<name>.claim.json``.
    This is the Dask task: one figure's exception does not stop the others."""
    start = time.perf_counter()
    try:
        return run_figure(name, out, size)
    except Exception as exc:  # noqa: BLE001 - any figure failure becomes its report row
        out = Path(out)
        with atomic_write(out / f"{name}.error.txt") as fh:
            fh.write(traceback.format_exc().encode())
        record, claim = _record_head(name, size, time.perf_counter() - start)
        return record | {"passed": False, "statement": claim.statement if claim else "",
                         "claim_size": claim.size if claim else "", "measured": {},
                         "checks": {"figure ran": False},
                         "error": f"{type(exc).__name__}: {exc}"}


def _finished(name: str, out: Path, size: str) -> dict | None:
    """The stored record of ``name`` if its PNG, CSV and record exist for this version and size."""
    paths = [out / f"{name}{ext}" for ext in (".png", ".csv", ".claim.json")]
    if not all(p.exists() for p in paths):
        return None
    try:
        record = json.loads(paths[2].read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("version") != dynkit.__version__ or record.get("size") != size:
        return None
    return record


@dataclass
class Report:
    """What ``reproduce`` did.

    Attributes:
        records: one claim record per figure, in name order.
        ran: names of the figures drawn in this run.
        skipped: names of the figures found finished and not redrawn.
        index: the path of ``index.html``.
    """

    records: list = field(default_factory=list)
    ran: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    index: Path | None = None

    @property
    def failed(self) -> list[str]:
        """Names of the figures whose claim fails (or that raised: ``errors``)."""
        return [r["name"] for r in self.records if not r["passed"]]

    @property
    def errors(self) -> list[str]:
        """Names of the figures that raised instead of drawing."""
        return [r["name"] for r in self.records if "error" in r]


def reproduce(out: str | Path = "dynkit-reproduce", quick: bool = False,
              only: list[str] | None = None, client=None, progress: bool = True,
              size: str | None = None) -> Report:
    """Draw the registered figures, check each one's claim, write the report; resumable.

    Args:
        out: the output folder: ``<name>.png``, ``<name>.csv``, ``<name>.claim.json`` per
            figure, ``index.html`` and ``README.md``.
        quick: the CPU-minute sizes (else the full sizes); ``size`` overrides it.
        only: figure names to run (default: every registered figure).
        client: a ``dask.distributed.Client``; each figure becomes one task. ``None``: run
            in this process, one after another.
        progress: a tqdm bar over the figures.
        size: ``"quick"``, ``"full"`` or ``"paper"`` (the paper's scale, for a GPU; a figure
            without a paper-scale configuration runs at ``"full"``, and its record says so).

    Returns:
        A ``Report``; ``report.failed`` lists the figures whose claim fails.
    """
    out = Path(out)
    names = FIGURES.names() if only is None else list(dict.fromkeys(only))
    if not names:
        raise InvalidArgumentError("reproduce: no figures to run (--only is empty)")
    for name in names:
        FIGURES.get(name)  # an unknown name fails here, listing the known ones
    out.mkdir(parents=True, exist_ok=True)
    size = resolve_size(quick, size)
    sizes = {name: figure_size(name, size) for name in names}
    report = Report()
    records = {}
    for name in names:
        stored = _finished(name, out, sizes[name])
        if stored is None:
            continue
        try:  # re-check the claim on the stored table
            records[name] = figure_record(name, out, sizes[name], stored["seconds"])
        except (KeyError, IndexError, ValueError):  # a table older than its claim: redraw
            continue
        report.skipped.append(name)
    todo = [n for n in names if n not in records]
    if client is not None:
        futures = [client.submit(try_figure, n, str(out), sizes[n], key=f"dynkit-figure-{n}",
                                 pure=False) for n in todo]
        for name, record in zip(todo, client.gather(futures)):
            records[name] = record
            report.ran.append(name)
    else:
        for name in tqdm(todo, desc=f"figures ({size})", unit="figure", disable=not progress):
            records[name] = try_figure(name, out, sizes[name])
            report.ran.append(name)
    report.records = [records[n] for n in sorted(records)]
    report.index = write_report(report.records, out)
    return report


def _table(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "figure": r["name"], "paper": r["paper"], "claim": r["statement"],
        "measured": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in r["measured"].items()),
        "result": ("PASS" if r["passed"] else f"ERROR: {r['error']} (see {r['name']}.error.txt)"
                   if "error" in r else "FAIL: " + "; ".join(
                       k for k, ok in r["checks"].items() if not ok)),
        "time (s)": r["seconds"], "size": r["size"], "claim needs": r["claim_size"],
    } for r in records])


def write_report(records: list[dict], out: Path) -> Path:
    """Write ``index.html`` and ``README.md`` (the table and each figure with its CSV) under
    ``out``; returns the path of ``index.html``."""
    table = _table(records)
    passed = sum(r["passed"] for r in records)
    head = (f"dynkit {dynkit.__version__} reproduction: {passed}/{len(records)} claims pass "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    md = [f"# {head}", "", "| " + " | ".join(table.columns) + " |",
          "|" + "---|" * len(table.columns)]
    md += ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |"
           for row in table.itertuples(index=False)]
    md += [""] + [f"## {r['name']}\n\n![{r['name']}]({r['name']}.png) "
                  f"[{r['name']}.csv]({r['name']}.csv)\n" for r in records]
    with atomic_write(out / "README.md") as fh:
        fh.write("\n".join(md).encode())
    body = [f"<h1>{html.escape(head)}</h1>", table.to_html(index=False, escape=True)]
    for r in records:
        n = html.escape(r["name"])
        body.append(f'<h2 id="{n}">{n}</h2><p><a href="{n}.csv">{n}.csv</a></p>'
                    f'<img src="{n}.png" alt="{n}" style="max-width:100%">')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>dynkit reproduce</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
            "td,th{padding:2px 6px;font-size:small}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    index = out / "index.html"
    with atomic_write(index) as fh:
        fh.write(page.encode())
    return index
