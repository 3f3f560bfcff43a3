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
