"""Smoke tests of the two-layer figures: quick mode writes PNG + CSV showing the phenomenon."""

import numpy as np
import pytest


@pytest.mark.slow
def test_lazy_vs_rich(quick_figure):
    from dynkit.figures import lazy_vs_rich

    df = quick_figure(lazy_vs_rich)
    s = df[df["kind"] == "summary"].sort_values("alpha")
    assert np.all(np.diff(s["rel_dist"]) < 0)          # distance traveled falls with alpha
    assert s["rel_dist"].iloc[0] > 1 and s["rel_dist"].iloc[-1] < 0.3
    assert np.all(s["train_loss"] < 0.05 * 0.47)       # every alpha fits (loss(0) = 0.47)


@pytest.mark.slow
def test_meanfield_convergence(quick_figure):
    from dynkit.figures import meanfield_convergence

    df = quick_figure(meanfield_convergence)
    gaps = meanfield_convergence.gaps(df).sort_values("m")
    assert np.all(np.diff(gaps["gap"]) < 0)            # curves approach the wide-net limit


@pytest.mark.slow
def test_teacher_student_ode(quick_figure):
    from dynkit.figures import teacher_student_ode

    df = quick_figure(teacher_student_ode)
    eg = df.pivot(index="time", columns=["source", "seed"], values="eg")
    log_ratio = np.log(eg["sgd"] / eg["ode"])          # one column per seed, every time point
    assert log_ratio.shape[1] >= 2 and log_ratio.notna().all().all()
    # Each run at d = 500 follows its ODE along the whole curve (fall, plateau, escape): relative
    # fluctuations ~ c / sqrt(d), c <= 2.5, the max over the curve measured at 0.06-0.19 over 32
    # runs, so every point must lie within |log(eps_sgd / eps_ode)| <= 0.3 = 6.7 / sqrt(d)
    # (the per-run tolerance of tests/test_teacher_student.py).
    assert np.abs(log_ratio).to_numpy().max() <= 0.3
    ode = eg["ode"].mean(axis=1)
    plateau = ode[(ode.index >= 10) & (ode.index <= 30)]
    assert plateau.max() / plateau.min() < 1.1 and plateau.min() > 0.01   # plateau ...
    assert ode.iloc[-1] < 0.3 * plateau.min()                            # ... and escape


@pytest.mark.slow
def test_early_alignment(quick_figure):
    from dynkit.figures import early_alignment

    df = quick_figure(early_alignment)
    h = df[df["kind"] == "history"]
    assert h["aligned"].iloc[-1] > 0.9                 # neurons aligned by output-weight sign
    assert h["eff_rank"].iloc[-1] < 2.5 < h["eff_rank"].iloc[0]    # W near rank two
    assert -1.6 < early_alignment.late_slope(df) < -0.7          # loss ~ 1/t late


@pytest.mark.slow
def test_meanfield_knots(quick_figure):
    from dynkit.figures import meanfield_knots

    df = quick_figure(meanfield_knots)
    iv = df[df["kind"] == "interval"]
    assert len(iv) == 5 and iv["knots"].max() <= 3
    assert df[df["kind"] == "summary"]["train_loss"].max() < 0.01


@pytest.mark.slow
def test_xor_feature_learning(quick_figure):
    from dynkit.figures import xor_feature_learning

    df = quick_figure(xor_feature_learning)
    d = df["d"].iloc[0]
    assert df["signal"].iloc[0] < 3 / d                           # isotropic start
    assert df["signal"].iloc[-1] > 0.5                            # signal-heavy at the end
    assert df["test_error"].iloc[-1] < 0.05
    # signal-finding: the signal fraction rises while the loss is still near log 2
    rising = df[df["test_loss"] > 0.6]
    assert rising["signal"].max() > 2 * df["signal"].iloc[0]
