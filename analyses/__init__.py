"""Analyses that consume checkpoints: path-norms, mode connectivity, neural collapse, NTK
dynamics, curvature (Hessian spectra)."""

__all__ = [
    "collapse", "collapse_imbalanced", "collapse_series", "collapse_stream", "hessian",
    "hessian_ops", "hessian_series", "hessian_spectrum", "lmc",
    "lmc_stability", "ntk_dynamics", "pathnorm", "pathnorm_bound", "permutation",
    "reinit", "scaling", "scaling_coord", "scaling_signal", "scaling_skip", "scaling_transfer",
    "similarity", "similarity_google", "similarity_layers", "similarity_stream",
]
