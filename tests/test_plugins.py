"""Plugins by entry point: a third-party distribution adds a metric and a figure to
``dynkit metrics`` and ``dynkit figures`` without touching dynkit.

The example distribution is built in a temporary folder: a package plus a ``*.dist-info``
folder (METADATA, entry_points.txt); ``importlib.metadata`` finds it on ``sys.path`` (here:
``PYTHONPATH`` of a ``dynkit`` subprocess), exactly as it finds an installed wheel.
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pandas as pd
import pytest

import dynkit as dk
from dynkit.errors import InvalidArgumentError
from dynkit.registry import PluginWarning, Registry
from dynkit.schema import COLUMNS

DIST = "dynkit-example-plugin"

METRICS_PY = '''
"""Example plugin metric: the L1 norm of every parameter (no dynkit import needed)."""
import numpy as np
import pandas as pd


def param_l1(model, params, data):
    """sum of |theta| over every parameter array (example plugin)"""
    total = sum(float(np.abs(np.asarray(v, dtype=np.float64)).sum())
                for layer in params.values() for v in layer.values())
    return pd.DataFrame({"metric": ["param_l1"], "value": [total]})
'''

FIGURES_PY = '''
"""Example plugin figure: a parabola and its table."""
import pandas as pd

from dynkit.figures.common import FigureResult, PaperFigure, new_figure


def draw(quick=False):
    df = pd.DataFrame({"x": range(5 if quick else 50)}).assign(y=lambda d: d["x"] ** 2)
    fig, axes = new_figure()
    axes[0, 0].plot(df["x"], df["y"])
    return FigureResult(fig, df)


parabola = PaperFigure("example-parabola", "y = x^2, from an example plugin", draw)
'''

ENTRY_POINTS = """
[dynkit.metrics]
param-l1 = dynkit_example_plugin.metrics:param_l1
broken = dynkit_example_plugin.broken:nothing

[dynkit.figures]
example-parabola = dynkit_example_plugin.figures:parabola
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    pkg = root / "dynkit_example_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""An example third-party dynkit plugin."""\n')
    (pkg / "metrics.py").write_text(METRICS_PY)
    (pkg / "figures.py").write_text(FIGURES_PY)
    (pkg / "broken.py").write_text("raise ImportError('this plugin needs a missing package')\n")
    info = root / "dynkit_example_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    return root


def dynkit_cli(plugin_dir, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "dynkit", *args], capture_output=True,
                          text=True, env=env, check=False)


@pytest.mark.slow
def test_plugin_metric_and_figure_are_listed(plugin_dir):
    out = dynkit_cli(plugin_dir, "metrics", "--help")
    assert out.returncode == 0, out.stderr
    assert "param-l1" in out.stdout and "sum of |theta|" in out.stdout
    assert "performance" in out.stdout and "collapse" in out.stdout   # the built-in ones too
    # the broken plugin is named, with its distribution, and does not stop the CLI
    assert "dynkit: warning:" in out.stderr and "'broken'" in out.stderr and DIST in out.stderr
    assert "Traceback" not in out.stderr
    listing = dynkit_cli(plugin_dir, "figures", "list")
    assert listing.returncode == 0, listing.stderr
    assert "example-parabola" in listing.stdout and "edge-of-chaos" in listing.stdout


@pytest.mark.slow
def test_plugin_metric_runs_on_a_checkpoint(plugin_dir, tmp_path):
    model = dk.models.mlp(64, [8], 10)
    params = model.init(jax.random.PRNGKey(3))
    ckpt = dk.save_checkpoint(tmp_path / "tiny.safetensors", model, params, step=7)
    out = dynkit_cli(plugin_dir, "metrics", str(ckpt), "--metrics", "param-l1,weights",
                     "--out", str(tmp_path / "m"))
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "m" / "metrics.csv")
    row = table[table["metric"] == "param_l1"]
    assert list(row["step"]) == [7] and set(table.columns) <= set(COLUMNS)
    expected = sum(np.abs(np.asarray(v, dtype=np.float64)).sum()
                   for layer in params.values() for v in layer.values())
    assert row["value"].iloc[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.slow
def test_plugin_figure_is_made(plugin_dir, tmp_path):
    out = dynkit_cli(plugin_dir, "figures", "make", "example-parabola", "--quick",
                     "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "example-parabola.csv")
    assert list(df["y"]) == [0, 1, 4, 9, 16]
    assert (tmp_path / "example-parabola.png").stat().st_size > 1000


def test_registry_reports_a_failed_plugin(plugin_dir, monkeypatch):
    """In-process: a fresh registry warns about the broken plugin, keeps the others, and
    names the failure when the broken metric is asked for."""
    monkeypatch.syspath_prepend(str(plugin_dir))
    registry = Registry("metric", group="dynkit.metrics")
    with pytest.warns(PluginWarning, match=rf"'broken'.*{DIST}.*missing package"):
        names = registry.names()
    assert {"param-l1", "performance", "weights"} <= set(names) and "broken" not in names
    assert registry.get("param-l1").help == "sum of |theta| over every parameter array " \
                                            "(example plugin)"
    with pytest.raises(InvalidArgumentError, match="unknown metric 'broken'.*failed to load"):
        registry.get("broken")


def test_every_registered_figure_keeps_the_contract():
    """Each entry of the ``dynkit.figures`` group is a ``PaperFigure`` named as its entry point,
    with a help line and a ``draw``; running each in quick mode (PNG + non-empty CSV) is done
    once per figure by the ``quick_figure`` smoke tests of tests/test_figures_*.py."""
    from dynkit.figures.common import PaperFigure
    from dynkit.registry import FIGURES

    names = FIGURES.names()
    assert len(names) >= 19
    for name in names:
        fig = FIGURES.get(name).func
        assert isinstance(fig, PaperFigure) and fig.name == name, name
        assert fig.help and callable(fig.draw), name
