"""The command line: demo report, info, metrics over a run, clear errors."""

import subprocess
import sys

import pandas as pd
import pytest

from dynkit.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_report(demo_dir):
    assert (demo_dir / "index.html").stat().st_size > 500
    text = (demo_dir / "README.md").read_text()
    assert "Learning curves" in text and "Metric: weights" in text
    curves = pd.read_csv(demo_dir / "tables" / "learning_curves.csv")
    assert set(curves["split"]) == {"train", "test"}
    assert (demo_dir / "learning_curves.png").stat().st_size > 1000
    perf = pd.read_csv(demo_dir / "tables" / "performance.csv")
    assert set(perf["seed"]) == {0, 1}
    # the metric table's final train loss is the trainer's own final train loss
    hist = curves[(curves["split"] == "train")]
    for seed in (0, 1):
        h = hist[hist["seed"] == seed]
        p = perf[(perf["seed"] == seed) & (perf["metric"] == "loss") & (perf["split"] == "train")]
        final_h = h.loc[h["step"].idxmax(), "loss"]
        final_p = p.loc[p["step"].idxmax(), "value"]
        assert final_p == pytest.approx(final_h, rel=1e-4)


@pytest.mark.slow
def test_info_and_metrics_on_run(demo_dir, tmp_path, capsys):
    run = demo_dir / "runs" / "seed0"
    ckpt = max(run.glob("*.safetensors"))
    assert main(["info", str(ckpt)]) == 0
    assert "mlp" in capsys.readouterr().out
    out = tmp_path / "m"
    assert main(["metrics", str(run), "--metrics", "weights,performance", "--out", str(out)]) == 0
    table = pd.read_csv(out / "metrics.csv")
    assert table["step"].nunique() == len(list(run.glob("*.safetensors")))
    assert (out / "weights.png").exists()


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynkit: error:") and "missing.safetensors" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    assert main(["info", str(bad)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["metrics", str(bad), "--metrics", "nope"]) == 2


def test_python_m_dynkit_help():
    out = subprocess.run([sys.executable, "-m", "dynkit", "--help"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0 and "demo" in out.stdout


@pytest.mark.slow
def test_train_then_lmc(tmp_path, capsys):
    for seed in (0, 1):
        assert main(["train", "--model", "cnn", "--image", "--epochs", "1", "--seed", str(seed),
                     "--save-every", "5", "--out", str(tmp_path / f"s{seed}"), "--quiet"]) == 0
    capsys.readouterr()
    a, b = (max((tmp_path / f"s{s}").glob("*.safetensors")) for s in (0, 1))
    out = tmp_path / "lmc"
    assert main(["lmc", str(a), str(b), "--image", "--align", "weights", "--alphas", "5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loss_barrier" in printed
    barriers = pd.read_csv(out / "barriers.csv")
    assert set(barriers["alignment"]) == {"none", "weights"}
    assert (out / "interpolation.png").exists() and (out / "layerwise.png").exists()
    # a checkpoint of another architecture is refused with a clear message
    assert main(["train", "--epochs", "1", "--widths", "8", "--out", str(tmp_path / "m"),
                 "--quiet"]) == 0
    other = max((tmp_path / "m").glob("*.safetensors"))
    assert main(["lmc", str(a), str(other), "--image"]) == 2
    assert "different architectures" in capsys.readouterr().err


def test_train_schedule_choices_match_the_trainer():
    """`dynkit train --lr-schedule` lists its choices without importing jax; they must be
    exactly the schedules `dynkit.train.fit` knows."""
    from dynkit.cli import build_parser
    from dynkit.train import SCHEDULES

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    action = next(a for a in train._actions if a.dest == "lr_schedule")
    assert tuple(action.choices) == SCHEDULES
