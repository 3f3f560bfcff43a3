"""Depth, width and parametrization checks (``dynkit.analyses.scaling``): the μP coordinate
check (``scaling_coord``) and per-block signal propagation of residual networks
(``scaling_signal``)."""

from dynkit.analyses.scaling_coord import (
    CoordinateCheck,
    check_widths,
    coordinate_check,
    width_slopes,
)
from dynkit.analyses.scaling_signal import residual_forward_variance, signal_propagation

__all__ = ["CoordinateCheck", "check_widths", "coordinate_check", "residual_forward_variance",
           "signal_propagation", "width_slopes"]
