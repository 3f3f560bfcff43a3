"""Paper figures: one module per figure, a registry, and one matplotlib style."""
