"""Paper figures: one module per figure, the ``FIGURES`` registry, one matplotlib style.

Each figure module registers ``make(out_dir, quick) -> list[Path]`` (PNG plus CSV data) in
``dynkit.registry.FIGURES`` when imported; ``load_figures()`` imports them all.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dynkit.registry import FIGURES

#: Modules that register figures (one per paper figure).
FIGURE_MODULES: tuple[str, ...] = (
    "dynkit.figures.jacot_ntk_convergence",
    "dynkit.figures.pathnorm_training",
    "dynkit.figures.neural_collapse",
    "dynkit.figures.lee_linearization",
    "dynkit.figures.ntk_evolution",
    "dynkit.figures.grokking_lazy_rich",
    "dynkit.figures.nc_imbalanced",
    "dynkit.figures.nngp_finite_width",
    "dynkit.figures.edge_of_chaos",
    "dynkit.figures.lazy_vs_rich",
    "dynkit.figures.meanfield_convergence",
    "dynkit.figures.teacher_student_ode",
    "dynkit.figures.early_alignment",
    "dynkit.figures.meanfield_knots",
    "dynkit.figures.xor_feature_learning",
    "dynkit.figures.lmc_rebasin",
    "dynkit.figures.layerwise_lmc",
    "dynkit.figures.lmc_instability",
    "dynkit.figures.dropout_stability",
)


def load_figures() -> list[str]:
    """Import every figure module and return the registered names."""
    for module in FIGURE_MODULES:
        importlib.import_module(module)
    return FIGURES.names()


def make(name: str, out_dir: str | Path = "figures-out", quick: bool = False) -> list[Path]:
    """Produce the named figure (PNG + CSV) under ``out_dir``; ``quick`` is the CPU-minute mode."""
    load_figures()
    return FIGURES.get(name).func(Path(out_dir), quick)
