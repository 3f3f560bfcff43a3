"""A paper figure's quantitative claim, stated as a check on the figure's own data table.

A figure module defines ``claim = Claim(statement, check, size)`` next to its ``make`` and
passes it as ``PaperFigure(..., claim=claim)``. ``check(df)`` returns ``(measured, checks)``:
the numbers it measured (name -> float) and the named conditions of the claim (name -> bool).
``claim(df)`` returns a ``ClaimResult``: PASS when every condition holds. The quick-mode tests
and ``dynkit reproduce`` call the same ``claim``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from dynkit.errors import InvalidArgumentError

__all__ = ["SIZES", "Claim", "ClaimResult", "resolve_size"]

#: sizes, smallest first: ``quick`` (CPU minute), ``full`` (<= 30 minutes on 2 CPU cores),
#: ``paper`` (the paper's own scale, for a GPU; a figure size only where the figure defines it,
#: ``PaperFigure(paper=...)``). A claim of size ``paper`` is expected to FAIL at ``full`` here,
#: and its statement says what that scale is
SIZES = ("quick", "full", "paper")


def resolve_size(quick: bool = False, size: str | None = None) -> str:
    """The figure size asked for: ``size`` if given, else ``"quick"`` or ``"full"`` by ``quick``.

    Example:
        >>> resolve_size(True), resolve_size(False), resolve_size(True, "paper")
        ('quick', 'full', 'paper')
    """
    return size or ("quick" if quick else "full")


@dataclass(frozen=True)
class ClaimResult:
    """The verdict of a ``Claim`` on one table.

    Attributes:
        statement: the paper's claim, one line.
        size: the smallest figure size whose table shows the claim (``SIZES``).
        measured: the numbers the check measured.
        checks: each named condition of the claim and whether it holds.
    """

    statement: str
    size: str
    measured: dict
    checks: dict

    @property
    def passed(self) -> bool:
        """Every condition holds."""
        return all(self.checks.values())

    def measured_text(self, digits: int = 3) -> str:
        """``name=value`` pairs, ``digits`` significant digits."""
        return ", ".join(f"{k}={v:.{digits}g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.measured.items())

    def __str__(self) -> str:
        failed = [k for k, ok in self.checks.items() if not ok]
        verdict = "PASS" if self.passed else "FAIL (" + "; ".join(failed) + ")"
        return f"{verdict}: {self.statement} [{self.measured_text()}]"


@dataclass(frozen=True)
class Claim:
    """A paper's quantitative claim as a function of a figure's DataFrame.

    Args:
        statement: the claim, one line (``"aligned barrier < 0.5 x naive at every width"``).
        check: ``check(df) -> (measured: dict[str, float], checks: dict[str, bool])``; at least
            one check.
        size: the smallest size whose table shows the claim (``"quick"``, ``"full"`` or
            ``"paper"``: ``SIZES``).

    Example:
        >>> import pandas as pd
        >>> from dynkit.figures.claims import Claim
        >>> falls = Claim("y falls", lambda df: ({"last": float(df["y"].iloc[-1])},
        ...               {"y falls": bool(df["y"].is_monotonic_decreasing)}))
        >>> falls(pd.DataFrame({"y": [3.0, 1.0]})).passed, falls(pd.DataFrame({"y": [1, 3]})).passed
        (True, False)
    """

    statement: str
    check: Callable[[pd.DataFrame], tuple[dict, dict]]
    size: str = "quick"

    def __post_init__(self):
        if self.size not in SIZES:
            raise InvalidArgumentError(f"Claim size must be one of {SIZES}, got {self.size!r}")

    def __call__(self, df: pd.DataFrame) -> ClaimResult:
        measured, checks = self.check(df)
        if not checks:
            raise InvalidArgumentError(f"claim {self.statement!r}: check returned no conditions; "
                                       "a claim that cannot fail is not a claim")
        return ClaimResult(self.statement, self.size,
                           {k: _plain(v) for k, v in measured.items()},
                           {k: bool(v) for k, v in checks.items()})


def _plain(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
