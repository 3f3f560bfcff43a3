"""Quick-mode transfer figures: the CSV satisfies the paper's claim on the optimal lr."""

import pytest

from dynkit.analyses.scaling_transfer import optimum_spread


@pytest.mark.slow
def test_mup_transfer_optimum_stays_under_mup_and_drifts_under_sp(quick_figure):
    """Tensor Programs V: the optimal log2 lr moves by at most one octave across widths under
    muP, and by more under SP."""
    df = quick_figure("mup-transfer")
    assert sorted(set(df["width"])) == [64, 128, 256]
    spread = {p: optimum_spread(g, "width") for p, g in df.groupby("parametrization")}
    assert spread["muP"] <= 1.0
    assert spread["SP"] > 1.0
