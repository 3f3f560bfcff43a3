import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import pytest

# Reference comparisons (golden files, brute force) are in float64; float32 paths are
# exercised by passing dtype explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def quick_figure(tmp_path):
    """``make(figure)``: draw a figure (registered name or module) in quick mode under
    ``tmp_path`` and return its CSV table. Checks the figure contract on the way: the figure
    is the registered ``PaperFigure`` of its name, it writes exactly ``<name>.png`` (non-trivial)
    and ``<name>.csv`` (a non-empty table)."""
    import pandas as pd

    from dynkit import figures
    from dynkit.registry import FIGURES

    def make(figure):
        name = figure if isinstance(figure, str) else figure.make.name
        if not isinstance(figure, str):
            assert FIGURES.get(name).func is figure.make
        paths = figures.make(name, tmp_path, quick=True)
        assert paths == [tmp_path / f"{name}.png", tmp_path / f"{name}.csv"]
        assert paths[0].stat().st_size > 5000
        table = pd.read_csv(paths[1])
        assert len(table) > 0 and len(table.columns) > 0
        return table

    return make
