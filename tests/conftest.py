import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import pytest

# Reference comparisons (golden files, brute force) are in float64; float32 paths are
# exercised by passing dtype explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def quick_figures_dir(tmp_path_factory):
    """One ``dynkit reproduce --quick`` output folder for the session: each figure is drawn
    once, whichever tests read it (the resumable reproduce skips finished figures)."""
    return tmp_path_factory.mktemp("reproduce-quick")


@pytest.fixture
def quick_figure(quick_figures_dir):
    """``make(figure)``: draw a figure (registered name or module) in quick mode through
    ``dynkit.figures.reproduce`` (once per session) and return its CSV table. Checks the figure
    contract on the way: the figure is the registered ``PaperFigure`` of its name, it writes
    exactly ``<name>.png`` (non-trivial), ``<name>.csv`` (a non-empty table) and its claim
    record."""
    import pandas as pd

    from dynkit.figures.reproduce import reproduce
    from dynkit.registry import FIGURES

    def make(figure):
        name = figure if isinstance(figure, str) else figure.make.name
        if not isinstance(figure, str):
            assert FIGURES.get(name).func is figure.make
        reproduce(quick_figures_dir, quick=True, only=[name], progress=False)
        png, csv = (quick_figures_dir / f"{name}{ext}" for ext in (".png", ".csv"))
        assert png.stat().st_size > 5000
        assert (quick_figures_dir / f"{name}.claim.json").exists()
        table = pd.read_csv(csv)
        assert len(table) > 0 and len(table.columns) > 0
        return table

    return make


_TORCHVISION_SHIM = []  # keeps the shim's torch.library.Library alive for the session


@pytest.fixture(scope="session")
def torchvision():
    """torchvision (a test-only extra), skipped when it is not installed.

    The torchvision wheel pip pairs with the CPU torch is built for CUDA torch, and its import
    fails with ``operator torchvision::nms does not exist``. Its pure-Python model code works
    once the two missing operator schemas are declared, so this fixture declares them and
    imports again. The shim lives here, in the tests, never in the package: dynkit itself does
    not use torchvision.
    """
    import importlib
    import importlib.util
    import sys

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SHIM.append(lib)
    return importlib.import_module("torchvision")
