"""Mathematics of the infinite-width, mean-field and two-layer limits."""
