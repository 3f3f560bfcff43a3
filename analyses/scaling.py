"""Depth, width and parametrization checks (``dynkit.analyses.scaling``): the μP coordinate
check (``scaling_coord``), per-block signal propagation of residual networks
(``scaling_signal``), long-skip stability of U-Nets (``scaling_skip``) and learning-rate
transfer sweeps (``scaling_transfer``)."""

from dynkit.analyses.scaling_coord import (
    CoordinateCheck,
    check_widths,
    coordinate_check,
    width_slopes,
)
from dynkit.analyses.scaling_signal import residual_forward_variance, signal_propagation
from dynkit.analyses.scaling_skip import oscillation, skip_stability, stage_norms
from dynkit.analyses.scaling_transfer import lr_transfer, optimal_lr, optimum_spread

__all__ = ["CoordinateCheck", "check_widths", "coordinate_check", "lr_transfer", "optimal_lr",
           "optimum_spread", "oscillation", "residual_forward_variance", "signal_propagation",
           "skip_stability", "stage_norms", "width_slopes"]
