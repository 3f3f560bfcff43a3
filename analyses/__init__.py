"""Analyses that consume checkpoints: path-norms, mode connectivity, neural collapse, NTK
dynamics."""
