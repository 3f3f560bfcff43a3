"""`dynkit kernel` writes the kernel of a spec over a data set into a store (resumable) and
`dynkit kernel-regress` regresses from it: checked against kernel_fn and a dense float64 solve."""

import json
import re

import numpy as np
import pytest
import scipy.linalg as sl

from dynkit.cli import main
from dynkit.cli_kernel import load_data_spec
from dynkit.theory import stax
from dynkit.theory.kernel_store_read import open_kernels

pytest.importorskip("zarr")

SPEC = [["Dense", {"out_dim": 64, "W_std": 1.4, "b_std": 0.05}], ["Relu"],
        ["Dense", {"out_dim": 10, "W_std": 1.4, "b_std": 0.05}]]


@pytest.mark.slow
def test_kernel_and_kernel_regress(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = str(tmp_path / "k.zarr")
    argv = ["kernel", str(spec), "--data", "mnist1d:100", "--out", out, "--batch-size", "40",
            "--quiet"]
    assert main(argv) == 0
    assert "6 tiles computed" in capsys.readouterr().out           # 3x3 grid, upper triangle
    x, labels, n_train = load_data_spec("mnist1d:100")
    K = np.asarray(open_kernels(out).ntk, np.float64)
    np.testing.assert_allclose(K, stax.from_spec(SPEC)[2](x, None, "ntk"), rtol=2e-6, atol=1e-6)
    assert main(argv) == 0 and "0 tiles computed" in capsys.readouterr().out
    assert main(["kernel-regress", out, "--labels", "mnist1d:100", "--diag-reg", "0.01",
                 "--out", str(tmp_path / "pred.npy")]) == 0
    text = capsys.readouterr().out
    y = np.eye(10)[labels] - 0.1
    lam = 0.01 * np.trace(K[:n_train, :n_train]) / n_train
    ref = K[n_train:, :n_train] @ sl.solve(K[:n_train, :n_train] + lam * np.eye(n_train),
                                          y[:n_train], assume_a="pos")
    np.testing.assert_allclose(np.load(tmp_path / "pred.npy"), ref, rtol=1e-6,
                               atol=1e-6 * np.abs(ref).max())
    acc = float(re.search(r"test accuracy ([0-9.]+)", text).group(1))
    assert acc == pytest.approx(np.mean(ref.argmax(1) == labels[n_train:]), abs=1e-4)
    # a store of other inputs is refused with exit status 2
    assert main(argv[:3] + ["mnist1d:90"] + argv[4:]) == 2
    assert "holds another kernel" in capsys.readouterr().err


@pytest.mark.slow
def test_kernel_on_a_scheduler_and_regression_at_n3000(tmp_path, capsys):
    # `dynkit kernel --scheduler` on a LocalCluster, then `kernel-regress` from the store at
    # N = 3,000 (2,400 train + 600 test): equal to a dense float64 solve on the same kernel in
    # memory, to 1e-6 relative
    distributed = pytest.importorskip("distributed")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = str(tmp_path / "k.zarr")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=None) as cluster:
        assert main(["kernel", str(spec), "--data", "mnist1d:3000", "--out", out,
                     "--batch-size", "750", "--get", "ntk", "--quiet",
                     "--scheduler", cluster.scheduler_address]) == 0
    assert "10 tiles computed" in capsys.readouterr().out         # 4x4 grid, upper triangle
    _, labels, n_train = load_data_spec("mnist1d:3000")
    np.save(tmp_path / "labels.npy", labels)
    assert main(["kernel-regress", out, "--labels", str(tmp_path / "labels.npy"), "--train",
                 str(n_train), "--diag-reg", "0.01", "--tol", "1e-8", "--rank", "300",
                 "--out", str(tmp_path / "pred.npy")]) == 0
    capsys.readouterr()
    K = np.asarray(open_kernels(out).ntk, np.float64)
    y = np.eye(10)[labels] - 0.1
    lam = 0.01 * np.trace(K[:n_train, :n_train]) / n_train
    ref = K[n_train:, :n_train] @ sl.solve(K[:n_train, :n_train] + lam * np.eye(n_train),
                                          y[:n_train], assume_a="pos")
    np.testing.assert_allclose(np.load(tmp_path / "pred.npy"), ref, rtol=0,
                               atol=1e-6 * np.abs(ref).max())


def test_kernel_unreachable_scheduler_exits_with_a_clear_error(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    assert main(["kernel", str(spec), "--data", "mnist1d:20", "--out", str(tmp_path / "k.zarr"),
                 "--scheduler", "tcp://127.0.0.1:9", "--timeout", "1", "--quiet"]) == 2
    assert "no Dask scheduler answered at 'tcp://127.0.0.1:9'" in capsys.readouterr().err
