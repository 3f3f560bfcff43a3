"""Quick-mode transfer figures: the CSV satisfies the paper's claim on the optimal lr."""

import pytest

from dynkit.figures import depth_mup_transfer, mup_transfer


@pytest.mark.slow
def test_mup_transfer_optimum_stays_under_mup_and_drifts_under_sp(quick_figure):
    """Tensor Programs V: the optimal log2 lr moves by at most one octave across widths under
    muP, and by more under SP."""
    df = quick_figure("mup-transfer")
    assert sorted(set(df["width"])) == [64, 128, 256]
    result = mup_transfer.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_depth_mup_transfer_optimum_stable_only_with_branch_scaling(quick_figure):
    """Bordelon et al. 2023 / Tensor Programs VI: with 1/sqrt(L) branches the optimal log2 lr
    stays within one octave across depth; with unscaled branches it drifts by more."""
    df = quick_figure("depth-mup-transfer")
    assert sorted(set(df["depth"])) == [2, 4, 8]
    result = depth_mup_transfer.claim(df)
    assert result.passed, result
