"""The ``>>>`` examples of every module of the installed ``dynkit`` package run as doctests,
one test per module. A module without examples is skipped; a failing example fails with the
doctest report.

``dynkit.theory``, ``dynkit.analyses`` and ``dynkit.figures`` are mapped from top-level folders
(``[tool.setuptools] package-dir``); in an editable install they are not below
``dynkit.__path__``, so every package is walked from its own ``__path__``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dynkit

#: Subpackages mapped from top-level folders (pyproject's ``package-dir``).
MAPPED = ("dynkit.theory", "dynkit.analyses", "dynkit.figures")
#: ``python -m dynkit`` runs the CLI when imported.
SIDE_EFFECTS = {"dynkit.__main__"}
#: Modules whose examples take more than ~1.3 s on a 2-core CPU (measured; the quick tier
#: ``-m "not slow"`` skips them).
SLOW = {
    "dynkit.analyses.collapse",
    "dynkit.analyses.hessian",
    "dynkit.analyses.hessian_classes",
    "dynkit.analyses.hessian_ops",
    "dynkit.analyses.hessian_series",
    "dynkit.analyses.hessian_spectrum",
    "dynkit.analyses.lmc",
    "dynkit.analyses.lmc_stability",
    "dynkit.analyses.permutation",
    "dynkit.analyses.reinit",
    "dynkit.analyses.similarity_layers",
    "dynkit.evaluate",
    "dynkit.models.graph",
    "dynkit.models.torch_graph",
    "dynkit.theory.dual_activations",
    "dynkit.theory.empirical",
    "dynkit.theory.empirical_store",
    "dynkit.theory.empirical_structured",
    "dynkit.theory.gaussian_orthant",
    "dynkit.theory.kernel_store_read",
    "dynkit.theory.predict",
    "dynkit.theory.stax_activations",
    "dynkit.theory.stax_activations_extra",
    "dynkit.theory.stax_vocab",
    "dynkit.theory.symbolic",
    "dynkit.theory.teacher_student",
    "dynkit.theory.two_layer_net",
    "dynkit.theory.two_layer_train",
    "dynkit.train",
}
#: Modules whose examples build torch modules (the optional ``dynkit[torch]`` extra).
NEEDS_TORCH = {"dynkit.models.torch_graph", "dynkit.models.torch_template"}
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names() -> list[str]:
    """Every importable module of the ``dynkit`` package, subpackages included."""
    names = {"dynkit"}
    roots = [("dynkit", dynkit.__path__)]
    roots += [(name, importlib.import_module(name).__path__) for name in MAPPED]
    for prefix, path in roots:
        names.add(prefix)
        names.update(info.name for info in pkgutil.walk_packages(path, prefix + "."))
    return sorted(names - SIDE_EFFECTS)


def _param(name: str):
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if name in SLOW else [])


@pytest.mark.parametrize("name", [_param(n) for n in module_names()])
def test_module_examples(name):
    if name in NEEDS_TORCH:
        pytest.importorskip("torch")
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    if not tests:
        pytest.skip(f"{name} has no examples")
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    failed = sum(runner.run(test, out=report.append).failed for test in tests)
    assert failed == 0, "".join(report)


def test_walk_finds_mapped_subpackages():
    names = module_names()
    for package in MAPPED:
        assert package in names
        assert any(n.startswith(package + ".") for n in names)
    assert "dynkit.models.graph" in names and "dynkit.__main__" not in names
