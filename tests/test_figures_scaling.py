"""Quick-mode scaling figures: the CSVs show the claimed phenomena (each figure's ``claim``)."""

import pytest

from dynkit.figures import coordinate_check, resnet_signal


@pytest.mark.slow
def test_coordinate_check_mup_flat_sp_grows_ntk_shrinks(quick_figure):
    df = quick_figure(coordinate_check)
    assert sorted(df["step"].unique()) == [0, 1, 2, 3, 4, 5]
    result = coordinate_check.claim(df)
    assert result.passed, result


@pytest.mark.slow
def test_resnet_signal_propagation_claims(quick_figure):
    df = quick_figure(resnet_signal)
    assert sorted(df["variant"].unique()) == sorted(resnet_signal.VARIANTS)
    result = resnet_signal.claim(df)
    assert result.passed, result
