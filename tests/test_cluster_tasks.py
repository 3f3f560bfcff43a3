"""Many-task work on a Dask cluster (a LocalCluster reached through its tcp address):
`dynkit metrics` / ``metrics_over_run`` run one task per checkpoint, `dynkit sweep lr-transfer`
/ ``lr_transfer`` one task per width; each gives the same table as the in-process run."""

import io

import jax
import pandas as pd
import pytest

import dynkit as dk
from dynkit.analyses import scaling_transfer as st
from dynkit.cli import main
from dynkit.metrics import metrics_over_run, metrics_over_runs

distributed = pytest.importorskip("distributed")

NAMES = ["weights", "performance"]


def _save_run(folder, width: int, steps, seed0: int = 0):
    """A run folder: one checkpoint of an MLP 64 -> width -> 10 per step, each its own init."""
    model = dk.models.mlp(64, [width], 10)
    for s in steps:
        dk.save_checkpoint(str(folder / f"step_{s}.safetensors"), model,
                           model.init(jax.random.PRNGKey(seed0 + s)), step=s)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Five checkpoints (steps 0, 10, ..., 40) of a small MLP on digits."""
    return _save_run(tmp_path_factory.mktemp("run"), 8, range(0, 50, 10))


@pytest.fixture(scope="module")
def run_dir2(tmp_path_factory):
    """A second run: three checkpoints (steps 0, 5, 10) of a wider MLP."""
    return _save_run(tmp_path_factory.mktemp("run2"), 12, range(0, 15, 5), seed0=100)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as c:
        yield c


@pytest.mark.slow
def test_metrics_one_task_per_checkpoint_equal_in_process(run_dir, cluster, tmp_path, capsys):
    data = dk.data.load("digits", seed=0)
    with distributed.Client(cluster.scheduler_address) as client:
        for every, n_tasks in ((1, 5), (3, 3)):           # every=3: steps 0, 30 and the last
            here = metrics_over_run(run_dir, data, NAMES, every=every, progress=False)
            with distributed.get_task_stream(client) as stream:
                there = metrics_over_run(run_dir, data, NAMES, every=every, progress=False,
                                         client=client)
            keys = [t["key"] for t in stream.data if "_task_metrics" in str(t["key"])]
            assert len(set(keys)) == n_tasks
            pd.testing.assert_frame_equal(there, here)
            assert there.attrs["entries"] == here.attrs["entries"]
    out = tmp_path / "m"
    assert main(["metrics", str(run_dir), "--metrics", ",".join(NAMES), "--out", str(out),
                 "--scheduler", cluster.scheduler_address]) == 0
    capsys.readouterr()
    expected = metrics_over_run(run_dir, data, NAMES, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"),
                                  pd.read_csv(io.StringIO(expected.to_csv(index=False))))


@pytest.mark.slow
def test_metrics_of_many_runs_one_task_per_checkpoint_of_each(run_dir, run_dir2, cluster):
    # every checkpoint of both runs is submitted at once (5 + 3 tasks); each run's table is
    # its own metrics_over_run, row for row
    data = dk.data.load("digits", seed=0)
    with distributed.Client(cluster.scheduler_address) as client:
        with distributed.get_task_stream(client) as stream:
            tables = metrics_over_runs({"a": run_dir, "b": run_dir2}, data, NAMES,
                                       progress=False, client=client)
        keys = [t["key"] for t in stream.data if "_task_metrics" in str(t["key"])]
    assert len(set(keys)) == 8 and list(tables) == ["a", "b"]
    for key, folder in (("a", run_dir), ("b", run_dir2)):
        pd.testing.assert_frame_equal(tables[key],
                                      metrics_over_run(folder, data, NAMES, progress=False))


def test_metrics_cli_many_runs_writes_each_to_its_folder(run_dir, run_dir2, tmp_path, capsys):
    data = dk.data.load("digits", seed=0)
    out = tmp_path / "m"
    assert main(["metrics", str(run_dir), str(run_dir2), "--metrics", "weights",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    for folder in (run_dir, run_dir2):
        expected = metrics_over_run(folder, data, ["weights"], progress=False)
        pd.testing.assert_frame_equal(
            pd.read_csv(out / folder.name / "metrics.csv"),
            pd.read_csv(io.StringIO(expected.to_csv(index=False))))
        assert (out / folder.name / "weights.png").exists()
    assert not (out / "metrics.csv").exists()


def test_metrics_unreachable_scheduler_is_a_clear_error(run_dir, tmp_path, capsys):
    assert main(["metrics", str(run_dir), "--metrics", "weights", "--out", str(tmp_path / "m"),
                 "--scheduler", "tcp://127.0.0.1:9", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert "no Dask scheduler answered at 'tcp://127.0.0.1:9'" in err and "dask scheduler" in err


@pytest.mark.slow
def test_lr_transfer_one_task_per_width_equals_in_process(cluster, tmp_path, capsys):
    # the sweep of `dynkit sweep lr-transfer --widths 4,8 --lrs 2^-2:2^-1 --hidden-layers 1`
    data = dk.data.load("digits", seed=0)

    def build(n):
        return dk.models.mlp(64, [n], 10, parameterization="mup")

    args = (build, [4, 8], [0.25, 0.5], data, 3, [0])
    here = st.lr_transfer(*args, batch_size=32, progress=False)
    with distributed.Client(cluster.scheduler_address) as client:
        with distributed.get_task_stream(client) as stream:
            there = st.lr_transfer(*args, batch_size=32, progress=False, client=client,
                                   out=tmp_path / "sweep")
        keys = {str(t["key"]) for t in stream.data if "_size_cells" in str(t["key"])}
    assert len(keys) == 2
    pd.testing.assert_frame_equal(there, here)
    # the workers wrote every cell; a rerun here reads them back
    assert len(list((tmp_path / "sweep").glob("width_*/log2lr_*/seed_0/metrics.csv"))) == 4
    pd.testing.assert_frame_equal(
        st.lr_transfer(*args, batch_size=32, progress=False, out=tmp_path / "sweep"), here)
    # the command line on the same scheduler
    out = tmp_path / "cli"
    assert main(["sweep", "lr-transfer", "--model", "mlp", "--widths", "4,8", "--lrs",
                 "2^-2:2^-1", "--steps", "3", "--seeds", "1", "--batch-size", "32",
                 "--hidden-layers", "1", "--quiet", "--out", str(out),
                 "--scheduler", cluster.scheduler_address]) == 0
    capsys.readouterr()
    pd.testing.assert_frame_equal(pd.read_csv(out / "lr_transfer.csv"),
                                  pd.read_csv(io.StringIO(here.to_csv(index=False))))
