"""``dynkit sweep lr-transfer`` on tiny sizes: files, resumption, and clear errors."""

import pandas as pd
import pytest

from dynkit.cli import main


def _sweep(out, *extra):
    return main(["sweep", "lr-transfer", "--model", "mlp", "--widths", "4,8", "--lrs",
                 "2^-2:2^-1", "--steps", "3", "--seeds", "1", "--batch-size", "32",
                 "--hidden-layers", "1", "--out", str(out), "--quiet", *extra])


@pytest.mark.slow
def test_sweep_writes_cells_and_resumes(tmp_path, capsys):
    assert _sweep(tmp_path, "--parametrization", "sp") == 0
    table = pd.read_csv(tmp_path / "lr_transfer.csv")
    assert sorted(set(table["width"])) == [4, 8] and sorted(set(table["log2_lr"])) == [-2, -1]
    cells = sorted(tmp_path.glob("width_*/log2lr_*/seed_0/metrics.csv"))
    assert len(cells) == 4
    stamps = [p.stat().st_mtime_ns for p in cells]
    opt = pd.read_csv(tmp_path / "optimum.csv")
    for width, g in table.groupby("width"):  # the optimum is the argmin of the written table
        assert opt.set_index("width").loc[width, "log2_lr_opt"] == \
            g.set_index("log2_lr")["loss"].idxmin()
    assert _sweep(tmp_path, "--parametrization", "sp") == 0  # all done: nothing retrained
    assert [p.stat().st_mtime_ns for p in cells] == stamps
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "lr_transfer.csv"), table)
    assert _sweep(tmp_path, "--parametrization", "mup") == 2  # other settings, same folder
    assert "another sweep" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--widths", "8,4"], "strictly increasing"),
    (["--parametrization", "xp"], "unknown --parametrization 'xp'"),
    (["--lrs", "2^0:2^-3"], "lr range"),
    (["--lrs", "fast"], "malformed lr range"),
    (["--depths", "2,4"], "exactly one of --widths"),
])
def test_sweep_bad_input(tmp_path, capsys, args, message):
    argv = ["sweep", "lr-transfer", "--steps", "2", "--out", str(tmp_path), "--quiet"]
    if "--widths" not in args and "--depths" not in args:
        argv += ["--widths", "4,8"]
    if "--depths" in args:
        argv += ["--widths", "4,8"]
    assert main(argv + args) == 2
    assert message in capsys.readouterr().err
