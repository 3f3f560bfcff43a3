"""Internal layer objects behind ``dynkit.theory.stax``, gathered in one namespace.

``stax`` wraps each of these in an ``(init_fn, apply_fn, kernel_fn)`` triple. They live in
modules by idea:

* :mod:`dynkit.theory.stax_kernel`: the infinite-width ``Kernel`` (layouts, input kernel) and
  the ``Layer`` base class;
* :mod:`dynkit.theory.stax_dense`: ``Dense``;
* :mod:`dynkit.theory.stax_pointwise`: ``Elementwise`` nonlinearities, ``LayerNorm``,
  ``Identity``;
* :mod:`dynkit.theory.stax_spatial`: ``Conv``, ``Pool``, ``GlobalPool``, ``Flatten``;
* :mod:`dynkit.theory.stax_combinators`: ``Serial``, ``Parallel``, ``FanOut``,
  ``FanInSum``, ``FanInConcat`` and ``kernel_of``.
"""

from __future__ import annotations

from dynkit.theory.stax_combinators import (
    FanInConcat,
    FanInSum,
    FanOut,
    Parallel,
    Serial,
    kernel_of,
    split_first,
)
from dynkit.theory.stax_dense import Dense
from dynkit.theory.stax_kernel import Kernel, Layer, input_kernel
from dynkit.theory.stax_pointwise import Elementwise, Identity, LayerNorm
from dynkit.theory.stax_spatial import Conv, Flatten, GlobalPool, Pool

__all__ = [
    "Conv",
    "Dense",
    "Elementwise",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "GlobalPool",
    "Identity",
    "Kernel",
    "Layer",
    "LayerNorm",
    "Parallel",
    "Pool",
    "Serial",
    "input_kernel",
    "kernel_of",
    "split_first",
]
