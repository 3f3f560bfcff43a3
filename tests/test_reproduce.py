"""``dynkit reproduce``: resume after an interrupted run, the exit status of a failing claim,
the report, Dask tasks."""

import dataclasses
import json
import shutil

import pandas as pd
import pytest

from dynkit.cli import main
from dynkit.figures import edge_of_chaos
from dynkit.figures.claims import Claim
from dynkit.figures.common import FigureResult, PaperFigure, new_figure
from dynkit.figures.reproduce import reproduce
from dynkit.registry import FIGURES, Entry


def _swap(monkeypatch, name, **changes):
    """Replace the registered figure ``name`` by a copy with ``changes`` for this test."""
    FIGURES.names()
    fig = dataclasses.replace(FIGURES.get(name).func, **changes)
    monkeypatch.setitem(FIGURES._entries, name, Entry(name, fig, fig.help))


def _interrupt(quick=False):
    raise KeyboardInterrupt


@pytest.mark.slow
def test_reproduce_resumes_and_fails_on_a_failing_claim(quick_figure, quick_figures_dir,
                                                        tmp_path, monkeypatch, capsys):
    # a finished figure from an earlier run (the session's quick run) ...
    quick_figure(edge_of_chaos)
    for ext in (".png", ".csv", ".claim.json"):
        shutil.copy(quick_figures_dir / f"edge-of-chaos{ext}", tmp_path)
    only = ["reproduce", "--quick", "--only", "edge-of-chaos,meanfield-knots",
            "--out", str(tmp_path)]
    # ... and a run interrupted while drawing the second figure
    with monkeypatch.context() as m:
        _swap(m, "meanfield-knots", draw=_interrupt)
        assert main(only) == 130
    assert not (tmp_path / "meanfield-knots.claim.json").exists()
    # resumed: the finished figure is skipped, the other one is drawn
    report = reproduce(tmp_path, quick=True, only=["edge-of-chaos", "meanfield-knots"],
                       progress=False)
    assert report.skipped == ["edge-of-chaos"] and report.ran == ["meanfield-knots"]
    assert report.failed == []
    record = json.loads((tmp_path / "meanfield-knots.claim.json").read_text())
    assert record["passed"] and record["size"] == "quick" and record["seconds"] > 0
    # everything is finished now: nothing is drawn; the report lists both
    capsys.readouterr()
    assert main(only) == 0
    assert "ran 0, skipped 2" in capsys.readouterr().out
    readme = (tmp_path / "README.md").read_text()
    for name in ("edge-of-chaos", "meanfield-knots"):
        assert f"[{name}.csv]({name}.csv)" in readme and f"{name}.png" in readme
    assert readme.count("| PASS |") == 2 and "Schoenholz et al. 2017" in readme
    html = (tmp_path / "index.html").read_text()
    assert 'href="meanfield-knots.csv"' in html and "2/2 claims pass" in html
    # a failing claim (checked again on the stored table) makes the run fail
    failing = Claim("more than 3 knots", lambda df: ({"n": len(df)}, {"> 3 knots": False}))
    _swap(monkeypatch, "meanfield-knots", claim=failing)
    assert main(only) == 1
    assert "claims fail: meanfield-knots" in capsys.readouterr().err
    assert "FAIL: &gt; 3 knots" in (tmp_path / "index.html").read_text()


def _line(quick=False):
    df = pd.DataFrame({"x": [0.0, 1.0], "y": [1.0, 3.0]})
    fig, axes = new_figure()
    axes[0, 0].plot(df["x"], df["y"])
    return FigureResult(fig, df)


def test_reproduce_on_a_dask_client_and_errors(tmp_path, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    rises = Claim("y rises", lambda df: ({"dy": float(df["y"].diff().iloc[-1])},
                                         {"y rises": bool(df["y"].diff().iloc[-1] > 0)}))
    fig = PaperFigure("tiny-line", "a rising line (Nobody 2024)", _line, rises)
    FIGURES.names()
    monkeypatch.setitem(FIGURES._entries, "tiny-line", Entry("tiny-line", fig, fig.help))
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None) as client:
        report = reproduce(tmp_path, quick=True, only=["tiny-line"], client=client)
    assert report.ran == ["tiny-line"] and report.failed == []
    rec = report.records[0]
    assert rec["measured"] == {"dy": 2.0} and rec["paper"] == "Nobody 2024"
    # full size is another size: the quick record does not count as finished
    assert reproduce(tmp_path, quick=False, only=["tiny-line"], progress=False).ran == [
        "tiny-line"]
    assert main(["reproduce", "--only", "no-such-figure", "--out", str(tmp_path)]) == 2


def _broken(quick=False):
    raise FloatingPointError("no fixed point")


def test_a_figure_that_raises_is_reported_and_the_others_still_run(tmp_path, monkeypatch,
                                                                     capsys):
    rises = Claim("y rises", lambda df: ({"dy": float(df["y"].diff().iloc[-1])},
                                         {"y rises": bool(df["y"].diff().iloc[-1] > 0)}))
    FIGURES.names()
    for name, draw in (("a-broken", _broken), ("b-line", _line)):
        fig = PaperFigure(name, f"{name} (Nobody 2024)", draw, rises)
        monkeypatch.setitem(FIGURES._entries, name, Entry(name, fig, fig.help))
    args = ["reproduce", "--quick", "--only", "a-broken,b-line", "--out", str(tmp_path)]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "ERROR  a-broken" in out and "PASS   b-line" in out
    assert "figure a-broken raised FloatingPointError: no fixed point" in err
    assert "FloatingPointError" in (tmp_path / "a-broken.error.txt").read_text()
    assert not (tmp_path / "a-broken.claim.json").exists()
    assert (tmp_path / "b-line.claim.json").exists()
    assert "ERROR: FloatingPointError: no fixed point" in (tmp_path / "README.md").read_text()
    # fixed: the next run draws only the broken figure, and the error file goes
    _swap(monkeypatch, "a-broken", draw=_line)
    report = reproduce(tmp_path, quick=True, only=["a-broken", "b-line"], progress=False)
    assert report.ran == ["a-broken"] and report.skipped == ["b-line"]
    assert report.failed == [] and report.errors == []
    assert not (tmp_path / "a-broken.error.txt").exists()


def _paper_line():
    return FigureResult(new_figure()[0], pd.DataFrame({"x": [0, 1], "y": [1, 100]}))


def test_paper_size_runs_the_paper_draw_and_others_at_full(tmp_path, monkeypatch, capsys):
    rises = Claim("y rises", lambda df: ({"dy": float(df["y"].diff().iloc[-1])},
                                         {"y rises": bool(df["y"].diff().iloc[-1] > 0)}))
    FIGURES.names()
    big = PaperFigure("big-line", "a line at paper scale (Nobody 2024)", _line, rises,
                      paper=_paper_line)
    small = PaperFigure("small-line", "a line (Nobody 2024)", _line, rises)
    for fig in (big, small):
        monkeypatch.setitem(FIGURES._entries, fig.name, Entry(fig.name, fig, fig.help))
    assert big.sizes == ("quick", "full", "paper") and small.sizes == ("quick", "full")
    report = reproduce(tmp_path, only=["big-line", "small-line"], size="paper", progress=False)
    sizes = {r["name"]: r["size"] for r in report.records}
    assert sizes == {"big-line": "paper", "small-line": "full"}
    assert report.records[0]["measured"] == {"dy": 99.0}  # the paper draw's table
    assert reproduce(tmp_path, only=["big-line"], size="paper", progress=False).skipped == [
        "big-line"]
    # figures make: a figure without a paper size says which sizes it has; --quick and --size
    # must agree
    assert main(["figures", "make", "small-line", "--size", "paper", "--out",
                 str(tmp_path / "m")]) == 2
    assert "has no size 'paper'; it runs at quick, full" in capsys.readouterr().err
    assert main(["figures", "make", "big-line", "--quick", "--size", "full"]) == 2
    assert main(["figures", "make", "big-line", "--size", "paper", "--out",
                 str(tmp_path / "m")]) == 0
    assert pd.read_csv(tmp_path / "m" / "big-line.csv")["y"].tolist() == [1, 100]


def test_paper_sizes_extend_the_full_ones():
    from dynkit.figures import lee_linearization, lmc_rebasin, unet_long_skip

    for module in (lee_linearization, lmc_rebasin, unet_long_skip):
        assert module.make.sizes == ("quick", "full", "paper")
    full, paper = (lee_linearization.settings(size=s) for s in ("full", "paper"))
    assert set(full["widths"]) < set(paper["widths"]) and max(paper["widths"]) == 8192
    assert lee_linearization.settings(True) == lee_linearization.settings(size="quick")
    ks = lmc_rebasin.RESNET_MULTIPLIERS
    assert set(ks["full"]) < set(ks["paper"]) and max(ks["paper"]) == 16
    (s_full, w_full, n_full, _), (s_paper, w_paper, n_paper, _) = (
        unet_long_skip.CONFIGS[s] for s in ("full", "paper"))
    assert s_paper > s_full and w_paper > w_full and n_paper == 100_000 > n_full


def test_long_runs_talk(capfd):
    """A figure's sweep and the instability analysis show a tqdm bar (with the time left)."""
    import dynkit as dk
    from dynkit.analyses.lmc_stability import instability
    from dynkit.figures import meanfield_knots

    meanfield_knots.data(quick=True)
    err = capfd.readouterr().err
    assert "meanfield-knots: 100%" in err and "1/1" in err
    data = dk.data.load("gaussian_mixture", n_train=16, n_test=8)
    instability(dk.models.mlp(2, [8], 3), data, [0, 1], 2, alphas=3, batch_size=8,
                progress=True)
    err = capfd.readouterr().err
    assert "instability: 100%" in err and "2/2" in err and "train" not in err


def test_a_stored_table_older_than_its_claim_is_drawn_again(tmp_path, monkeypatch):
    """A claim that now reads a column the stored CSV lacks (same dynkit version): the figure
    is redrawn instead of the run failing on the old table."""
    needs_z = Claim("z rises", lambda df: ({"dz": float(df["z"].diff().iloc[-1])},
                                           {"z rises": bool(df["z"].diff().iloc[-1] > 0)}))

    def _line_z(quick=False):
        return FigureResult(new_figure()[0], pd.DataFrame({"x": [0, 1], "z": [1, 2]}))

    FIGURES.names()
    old = PaperFigure("z-line", "a line (Nobody 2024)", _line, None)
    monkeypatch.setitem(FIGURES._entries, "z-line", Entry("z-line", old, old.help))
    assert reproduce(tmp_path, quick=True, only=["z-line"], progress=False).ran == ["z-line"]
    _swap(monkeypatch, "z-line", draw=_line_z, claim=needs_z)
    report = reproduce(tmp_path, quick=True, only=["z-line"], progress=False)
    assert report.ran == ["z-line"] and report.skipped == [] and report.failed == []
