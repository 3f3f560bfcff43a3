"""Shared plumbing for figures: the style, atomic PNG/CSV writing, the figure contract
(``FigureResult``, ``PaperFigure``) and the plots shared by the CLI and the demo report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
import pandas as pd

from dynkit.errors import InvalidArgumentError
from dynkit.figures.claims import Claim, resolve_size
from dynkit.io import atomic_write

__all__ = ["STYLE", "FigureResult", "PaperFigure", "draw_from", "new_figure", "paper_from",
           "plot_series", "save_figure", "save_table", "style"]

STYLE = Path(__file__).with_name("dynkit.mplstyle")


def style():
    """Context manager applying dynkit's style; wrap a ``plot_*`` function's body in it."""
    return plt.style.context(STYLE)


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(fig, axes)``; ``figsize`` defaults to 4.2 x 3.2 inches per panel. Call inside
    ``style()``."""
    kwargs.setdefault("figsize", (4.2 * ncols, 3.2 * nrows))
    kwargs.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.style.context(STYLE), atomic_write(path) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


def save_table(df: pd.DataFrame, path: Path) -> Path:
    """Write a tidy table as CSV atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        fh.write(df.to_csv(index=False).encode())
    return path


@dataclass(frozen=True)
class FigureResult:
    """What a paper figure's ``draw(quick)`` returns.

    Attributes:
        figure: the matplotlib ``Figure``.
        data: the tidy table the figure shows (written next to it as CSV).
    """

    figure: matplotlib.figure.Figure
    data: pd.DataFrame


@dataclass(frozen=True)
class PaperFigure:
    """A named paper figure; registered through the ``dynkit.figures`` entry-point group.

    ``draw(quick)`` runs the experiment (``quick``: the CPU-minute sizes, else the full sizes,
    <= 30 minutes on 2 CPU cores) and returns a ``FigureResult``; ``paper()``, where a figure
    has one, runs it at the paper's own scale (a GPU's hours). Calling the figure,
    ``fig(out_dir, size=...)``, draws it and writes ``<name>.png`` and ``<name>.csv`` under
    ``out_dir``, each atomically.

    Args:
        name: the registered name, also the stem of the written files.
        help: one line for ``dynkit figures list``.
        draw: ``draw(quick: bool) -> FigureResult``.
        claim: the paper's quantitative claim as a check on the figure's table
            (``dynkit.figures.claims.Claim``), run by the quick-mode tests and
            ``dynkit reproduce``; ``None`` for a figure that states none yet.
        paper: ``paper() -> FigureResult`` at the paper's scale; ``None`` where the full size
            is the largest this figure has.

    Example:
        >>> import tempfile
        >>> import pandas as pd
        >>> from dynkit.figures.common import FigureResult, PaperFigure, new_figure
        >>> def draw(quick=False):
        ...     df = pd.DataFrame({"x": [0, 1], "y": [1, 3]})
        ...     fig, axes = new_figure()
        ...     axes[0, 0].plot(df["x"], df["y"])
        ...     return FigureResult(fig, df)
        >>> line = PaperFigure("line", "a straight line", draw)
        >>> [p.name for p in line(tempfile.mkdtemp(), quick=True)]
        ['line.png', 'line.csv']
        >>> line.sizes
        ('quick', 'full')
    """

    name: str
    help: str
    draw: Callable[[bool], FigureResult]
    claim: Claim | None = None
    paper: Callable[[], FigureResult] | None = None

    @property
    def sizes(self) -> tuple[str, ...]:
        """The sizes this figure runs at, smallest first (``claims.SIZES``)."""
        return ("quick", "full") + (("paper",) if self.paper is not None else ())

    def __call__(self, out_dir: str | Path, quick: bool = False,
                 size: str | None = None) -> list[Path]:
        """Draw the figure at ``size`` (default ``"quick"`` if ``quick`` else ``"full"``) and
        write ``[<name>.png, <name>.csv]`` under ``out_dir``."""
        size = resolve_size(quick, size)
        if size not in self.sizes:
            raise InvalidArgumentError(
                f"figure {self.name!r} has no size {size!r}; it runs at {', '.join(self.sizes)}")
        result = self.paper() if size == "paper" else self.draw(size == "quick")
        if not (isinstance(result, FigureResult) and isinstance(result.data, pd.DataFrame)):
            raise InvalidArgumentError(f"figure {self.name!r}: draw(quick) must return a "
                                       f"FigureResult(figure, data: DataFrame), got {result!r}")
        out = Path(out_dir)
        return [save_figure(result.figure, out / f"{self.name}.png"),
                save_table(result.data, out / f"{self.name}.csv")]


def draw_from(data: Callable[[bool], pd.DataFrame],
              plot: Callable[[pd.DataFrame], matplotlib.figure.Figure]
              ) -> Callable[[bool], FigureResult]:
    """The ``draw`` of a figure that plots its own data table.

    Args:
        data: ``data(quick) -> DataFrame``, the experiment.
        plot: ``plot(df) -> Figure``.

    Returns:
        ``draw(quick) -> FigureResult(plot(df), df)`` with ``df = data(quick)``.

    Example:
        >>> import pandas as pd
        >>> from dynkit.figures.common import draw_from, new_figure
        >>> def data(quick=False):
        ...     return pd.DataFrame({"x": [1, 2]})
        >>> def plot(df):
        ...     return new_figure()[0]
        >>> draw_from(data, plot)(quick=True).data["x"].tolist()
        [1, 2]
    """
    def draw(quick: bool = False) -> FigureResult:
        df = data(quick)
        return FigureResult(plot(df), df)

    return draw


def paper_from(data: Callable[..., pd.DataFrame],
               plot: Callable[[pd.DataFrame], matplotlib.figure.Figure]
               ) -> Callable[[], FigureResult]:
    """The ``paper`` draw (``PaperFigure(..., paper=...)``) of a figure whose experiment
    ``data(size="paper")`` has a paper-scale configuration.

    Example:
        >>> import pandas as pd
        >>> from dynkit.figures.common import new_figure, paper_from
        >>> def data(quick=False, size=None):
        ...     return pd.DataFrame({"n": [1000 if size == "paper" else 10]})
        >>> paper_from(data, lambda df: new_figure()[0])().data["n"].tolist()
        [1000]
    """
    def paper() -> FigureResult:
        df = data(size="paper")
        return FigureResult(plot(df), df)

    return paper


def _series_label(row_keys: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in row_keys.items() if pd.notna(v))


def plot_series(df: pd.DataFrame, metrics: list[str], by: list[str]):
    """One panel per metric, value vs step, one line per combination of the ``by`` columns.

    Args:
        df: a tidy series with columns ``step, metric, value`` (and the ``by`` columns).
        metrics: the metrics to draw, one panel each.
        by: columns whose values split a panel into lines (those absent or all-NaN in a
            panel are skipped); a panel has a legend when its lines are labeled, up to 8.

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> import pandas as pd
        >>> from dynkit.figures.common import plot_series
        >>> df = pd.DataFrame({"step": [0, 1, 0, 1], "metric": "loss", "value": [2., 1., 3., 2.],
        ...                    "split": ["train", "train", "test", "test"]})
        >>> fig = plot_series(df, ["loss"], ["split"])
        >>> [line.get_label() for line in fig.axes[0].lines]
        ['split=test', 'split=train']
    """
    with style():
        fig, axes = new_figure(1, len(metrics))
        for ax, metric in zip(axes[0], metrics):
            sub = df[df["metric"] == metric]
            keys = [c for c in by if c in sub and sub[c].notna().any()]
            groups = sub.groupby(keys, dropna=False) if keys else [((), sub)]
            for key, g in groups:
                key = key if isinstance(key, tuple) else (key,)
                ax.plot(g["step"], g["value"], marker="o",
                        label=_series_label(dict(zip(keys, key))))
            ax.set_xlabel("step")
            ax.set_title(metric)
            handles, _ = ax.get_legend_handles_labels()
            if handles and len(ax.lines) <= 8:
                ax.legend()
        fig.tight_layout()
    return fig
