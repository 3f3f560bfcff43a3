"""Kernels in a Zarr store (stax.batch(..., store=)): equality with the in-memory and the
unbatched kernel, upper-triangle storage, resumability (SIGKILL, truncated chunk), bad input,
Dask (LocalCluster, unreachable scheduler), many local devices."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dynkit.errors import InvalidArgumentError, MissingDependencyError
from dynkit.theory import stax
from dynkit.theory.kernel_store_read import open_kernels

pytest.importorskip("zarr")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = [["Dense", {"out_dim": 8, "W_std": 1.5, "b_std": 0.1}], ["Relu"],
        ["Dense", {"out_dim": 8, "W_std": 1.5, "b_std": 0.1}], ["Relu"],
        ["Dense", {"out_dim": 1}]]


def _kernel_fn():
    return stax.from_spec(SPEC)[2]


def _data(n, seed=0, d=5):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("rect", [False, True])
def test_store_equals_in_memory_and_unbatched(tmp_path, rect):
    kfn = _kernel_fn()
    x, y = _data(23), (_data(17, 1) if rect else None)
    ks = stax.batch(kfn, 8, store=str(tmp_path / "k.zarr"), spec=SPEC, progress=False)(x, y)
    mem = stax.batch(kfn, 8, progress=False)(x, y)
    ref = kfn(x, y)
    for name in ("nngp", "ntk"):
        got = np.asarray(getattr(ks, name))
        assert np.array_equal(got, getattr(mem, name))   # same tiles, same program: bit-equal
        np.testing.assert_allclose(got, getattr(ref, name), rtol=2e-6, atol=1e-6)
    # lazy slicing across tile borders, mirrored tiles included
    assert np.array_equal(ks.ntk[3:20, 2:9], mem.ntk[3:20, 2:9])
    assert np.array_equal(ks.nngp[-1], mem.nngp[-1])
    assert np.array_equal(ks.ntk.to_dask().compute(), mem.ntk)
    # with x2=None only the 6 tiles on and above the diagonal of the 3x3 grid exist
    chunks = sorted(os.listdir(tmp_path / "k.zarr" / "ntk" / "c"))
    n_chunks = sum(len(os.listdir(tmp_path / "k.zarr" / "ntk" / "c" / r)) for r in chunks)
    assert n_chunks == (9 if rect else 6) and ks.ntk.tiles_computed == n_chunks
    # resuming a complete store computes nothing
    again = stax.batch(kfn, 8, store=str(tmp_path / "k.zarr"), spec=SPEC, progress=False)(x, y)
    assert again.ntk.tiles_computed == 0


def test_store_refuses_other_kernel_or_input(tmp_path):
    path = str(tmp_path / "k.zarr")
    kfn, x = _kernel_fn(), _data(10)
    stax.batch(kfn, 4, store=path, spec=SPEC, progress=False)(x, None, "ntk")
    with pytest.raises(InvalidArgumentError, match="input_hash"):
        stax.batch(kfn, 4, store=path, spec=SPEC, progress=False)(x + 1, None, "ntk")
    other = SPEC[:2] + [["Dense", {"out_dim": 1}]]
    with pytest.raises(InvalidArgumentError, match="fingerprint"):  # no spec given: probe hash
        stax.batch(stax.from_spec(other)[2], 4, store=path, progress=False)(x, None, "ntk")
    with pytest.raises(InvalidArgumentError, match="tile"):
        stax.batch(kfn, 5, store=path, spec=SPEC, progress=False)(x, None, "ntk")
    with pytest.raises(InvalidArgumentError, match="not a dynkit kernel store"):
        open_kernels(str(tmp_path / "nothing.zarr"))
    os.chmod(path, 0o555)
    try:
        with pytest.raises(InvalidArgumentError, match="read-only"):
            stax.batch(kfn, 4, store=path, spec=SPEC, progress=False)(x, None, "ntk")
    finally:
        os.chmod(path, 0o755)


def test_truncated_chunk_is_detected_and_recomputed(tmp_path):
    path = str(tmp_path / "k.zarr")
    kfn, x = _kernel_fn(), _data(12)
    full = np.asarray(stax.batch(kfn, 4, store=path, progress=False)(x, None).ntk)
    chunk = os.path.join(path, "ntk", "c", "0", "2")
    with open(chunk, "r+b") as f:
        f.truncate(os.path.getsize(chunk) // 2)
    ks = stax.batch(kfn, 4, store=path, progress=False)(x, None)
    assert ks.ntk.tiles_computed == 1
    assert np.array_equal(np.asarray(ks.ntk), full)


def _sqrt_tile(a, b):
    """A kernel that is NaN wherever the first coordinates differ in sign."""
    import jax.numpy as jnp

    b = a if b is None else b
    return (jnp.sqrt(a[:, :1] * b[:, :1].T),)


def test_nan_tiles_count_as_done(tmp_path):
    # completion is the record, not the values: a tile that is NaN (here tile (0, 1) entirely,
    # tiles (0, 2) and (1, 2) in part) is done once marked and is not recomputed on resume
    from dynkit.theory.kernel_tiles import compute_to_store

    x = _data(12)
    x[:, 0] = np.abs(x[:, 0]) * np.repeat([1, -1, 1], 4)
    x[9, 0] = -x[9, 0]
    with np.errstate(invalid="ignore"):   # numpy: NaN where the signs differ
        ref = np.sqrt(np.outer(x[:, 0], x[:, 0]))
    assert np.isnan(ref[:4, 4:8]).all() and np.isnan(ref[8:, 8:]).any()
    path = str(tmp_path / "k.zarr")
    k = compute_to_store(_sqrt_tile, ("k",), x, None, path, 4, progress=False).k
    assert k.tiles_computed == 6
    np.testing.assert_allclose(np.asarray(k), ref, rtol=1e-6)   # NaN positions must match
    again = compute_to_store(_sqrt_tile, ("k",), x, None, path, 4, progress=False).k
    assert again.tiles_computed == 0
    np.testing.assert_allclose(np.asarray(again), ref, rtol=1e-6)


def test_half_written_tile_is_not_done(tmp_path, monkeypatch):
    # a crash after tile (0, 1)'s chunk write began and before its completion mark: the chunk
    # is half there (truncated), the mark is not; the resume recomputes it and every tile
    # that was never marked, and nothing else
    from dynkit.theory import kernel_store

    path = str(tmp_path / "k.zarr")
    kfn, x = _kernel_fn(), _data(12)
    mark = kernel_store.mark_done

    def crash_at_01(layout, bi, bj):
        if (bi, bj) == (0, 1):
            raise KeyboardInterrupt
        mark(layout, bi, bj)

    monkeypatch.setattr(kernel_store, "mark_done", crash_at_01)
    with pytest.raises(KeyboardInterrupt):
        stax.batch(kfn, 4, store=path, progress=False)(x, None)
    monkeypatch.setattr(kernel_store, "mark_done", mark)
    chunk = os.path.join(path, "ntk", "c", "0", "1")
    with open(chunk, "r+b") as f:
        f.truncate(os.path.getsize(chunk) // 2)
    layout = kernel_store.open_layout(path)
    assert kernel_store.verified_done(layout) == {(0, 0)}
    ks = stax.batch(kfn, 4, store=path, progress=False)(x, None)
    assert ks.ntk.tiles_computed == 5
    fresh = stax.batch(kfn, 4, store=str(tmp_path / "fresh.zarr"), progress=False)(x, None)
    for name in ("nngp", "ntk"):
        assert np.array_equal(np.asarray(getattr(ks, name)), np.asarray(getattr(fresh, name)))


def test_missing_extra_names_pip_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # the cluster half of the extra
    with pytest.raises(MissingDependencyError, match=r"pip install 'dynkit\[scale\]'"):
        stax.batch(_kernel_fn(), 4, store=str(tmp_path / "d.zarr"), scheduler="tcp://h:8786",
                   progress=False)(_data(6))
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'dynkit\[scale\]'"):
        stax.batch(_kernel_fn(), 4, store=str(tmp_path / "k.zarr"), progress=False)(_data(6))


def test_client_without_store_is_refused():
    with pytest.raises(InvalidArgumentError, match="store"):
        stax.batch(_kernel_fn(), 4, scheduler="tcp://127.0.0.1:1")


def test_unreachable_scheduler_fails_fast(tmp_path):
    from dynkit.theory.kernel_tiles_dask import SchedulerUnreachableError

    t0 = time.monotonic()
    with pytest.raises(SchedulerUnreachableError, match="dask scheduler"):
        stax.batch(_kernel_fn(), 4, store=str(tmp_path / "k.zarr"), scheduler="tcp://127.0.0.1:9",
                   timeout=1, progress=False)(_data(6))
    assert time.monotonic() - t0 < 30


_KILL_SCRIPT = """
import sys, time
import numpy as np
from dynkit.theory import stax, kernel_store
mark = kernel_store.mark_done
def slow_mark(layout, bi, bj):
    mark(layout, bi, bj)
    print("done", bi, bj, flush=True)
    time.sleep(0.1)
kernel_store.mark_done = slow_mark
x = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
kfn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))[2]
stax.batch(kfn, 5, store=sys.argv[1], progress=False)(x, None)
print("finished", flush=True)
"""


@pytest.mark.slow
def test_sigkill_then_resume_recomputes_only_missing_tiles(tmp_path):
    path = str(tmp_path / "k.zarr")
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, path], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("done")
        if seen >= 5:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from dynkit.theory import kernel_store

    layout = kernel_store.open_layout(path)
    done = kernel_store.verified_done(layout)
    total = len(layout.tiles())                               # 8 x 8 grid, upper: 36 tiles
    assert total == 36 and 5 <= len(done) < total
    x = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    kfn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))[2]
    ks = stax.batch(kfn, 5, store=path, progress=False)(x, None)
    assert ks.ntk.tiles_computed == total - len(done)
    fresh = stax.batch(kfn, 5, store=str(tmp_path / "fresh.zarr"), progress=False)(x, None)
    for name in ("nngp", "ntk"):
        assert np.array_equal(np.asarray(getattr(ks, name)), np.asarray(getattr(fresh, name)))


@pytest.mark.slow
def test_local_cluster_equals_in_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    kfn, x, y = _kernel_fn(), _data(14), _data(9, 1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for x2 in (None, y):
            tag = "sym" if x2 is None else "rect"
            on = stax.batch(kfn, 4, store=str(tmp_path / f"{tag}.zarr"), client=client,
                            progress=False)(x, x2)
            # in-process tiles (bit-equal to an in-process store, test above)
            local = stax.batch(kfn, 4, progress=False)(x, x2)
            ref = kfn(x, x2)
            for name in ("nngp", "ntk"):
                np.testing.assert_allclose(np.asarray(getattr(on, name)), getattr(local, name),
                                           rtol=1e-6, atol=0)
                np.testing.assert_allclose(np.asarray(getattr(on, name)), getattr(ref, name),
                                           rtol=2e-6, atol=1e-6)
        # the empirical NTK of a finite network, on the same cluster
        import jax

        import dynkit as dk
        from dynkit.theory import empirical
        from dynkit.theory.empirical_store import ntk_to_store

        model = dk.models.mlp(in_dim=5, widths=[8], out_dim=2)
        params = model.init(jax.random.PRNGKey(0))
        e = ntk_to_store(model, params, x, store=str(tmp_path / "e.zarr"), batch_size=5,
                         method="jacobian", client=client, progress=False)
        np.testing.assert_allclose(np.asarray(e),
                                   empirical.ntk_fn(model, method="jacobian")(x, None, params),
                                   rtol=1e-5, atol=1e-6)


# Run on each worker (client.run(exec, ...)): the first worker to finish writing tile (1, 2)'s
# chunks kills its own process with SIGKILL before the completion mark, once (a marker file).
_KILL_WORKER = """
import os, signal
from dynkit.theory import kernel_store
mark = kernel_store.mark_done
def mark_or_die(layout, bi, bj):
    if (bi, bj) == (1, 2):
        try:
            os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    mark(layout, bi, bj)
kernel_store.mark_done = mark_or_die
"""


@pytest.mark.slow
def test_killed_worker_run_completes(tmp_path):
    distributed = pytest.importorskip("distributed")
    kfn, x = _kernel_fn(), _data(16)
    marker = str(tmp_path / "killed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        client.run(exec, _KILL_WORKER.replace("MARKER", repr(marker)), {})
        ks = stax.batch(kfn, 4, store=str(tmp_path / "k.zarr"), client=client,
                        progress=False)(x, None)
        assert os.path.exists(marker)                  # a worker did die mid-tile ...
        dead = [pid for pid in pids.values() if not _alive(pid)]
        assert len(dead) == 1
    from dynkit.theory import kernel_store

    # ... before marking tile (1, 2) done, so Dask reran it elsewhere: every tile is marked
    assert ks.ntk.tiles_computed == 10
    assert kernel_store.verified_done(ks.ntk.layout) == set(ks.ntk.layout.tiles())
    local = stax.batch(kfn, 4, progress=False)(x, None)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(np.asarray(getattr(ks, name)), getattr(local, name),
                                   rtol=1e-6, atol=0)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a killed child not yet reaped is a zombie
        return f.read().split(")")[-1].split()[0] != "Z"


_DEVICES_SCRIPT = """
import collections, sys
import jax, numpy as np
from dynkit.theory import stax
used = collections.Counter()
put = jax.device_put
def counting_put(x, device=None, **kw):
    used[str(device)] += 1
    return put(x, device, **kw)
jax.device_put = counting_put
x = np.random.default_rng(0).standard_normal((20, 5)).astype(np.float32)
kfn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))[2]
ks = stax.batch(kfn, 5, store=sys.argv[1], progress=False)(x, None)
jax.device_put = put
np.testing.assert_allclose(np.asarray(ks.ntk), kfn(x, None, "ntk"), rtol=2e-6, atol=1e-6)
print(len(jax.local_devices()), len(used))
"""


@pytest.mark.slow
def test_tiles_go_to_all_local_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT, str(tmp_path / "k.zarr")],
                         env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["4", "4"]


_RSS_SCRIPT = """
import resource, sys
import numpy as np
from dynkit.theory import stax
kfn = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(64), stax.Relu(), stax.Dense(1))[2]
peaks = []
for n in (1000, 4000):
    x = np.random.default_rng(0).standard_normal((n, 40)).astype(np.float32)
    stax.batch(kfn, 500, store=f"{sys.argv[1]}/k{n}.zarr", progress=False)(x, None)
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(*peaks)
"""


@pytest.mark.slow
def test_driver_rss_flat_in_n(tmp_path):
    # N = 4,000 after N = 1,000 in one process: the peak RSS may not grow by 20 %. The two
    # kernels in memory would be 2 x 64 MB at N = 4,000 (measured: +50 % on a ~320 MB peak).
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    small, large = map(int, out.stdout.split()[-2:])
    assert large < 1.2 * small
