"""Analyses that consume checkpoints: path-norms, mode connectivity, neural collapse, NTK
dynamics."""

__all__ = [
    "collapse", "collapse_imbalanced", "collapse_series", "collapse_stream", "lmc",
    "lmc_stability", "ntk_dynamics", "pathnorm", "pathnorm_bound", "permutation",
    "reinit", "similarity", "similarity_google", "similarity_layers", "similarity_stream",
]
