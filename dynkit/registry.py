"""Named registries that later capabilities fill: metrics (``dynkit metrics``) and figures.

One entry = one function plus its name and one line of help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dynkit.errors import InvalidArgumentError


@dataclass(frozen=True)
class Entry:
    name: str
    func: Callable
    help: str


class Registry:
    """A name -> ``Entry`` map with a ``register(name, help)`` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, help: str) -> Callable[[Callable], Callable]:
        def deco(func: Callable) -> Callable:
            self._entries[name] = Entry(name, func, help)
            return func

        return deco

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise InvalidArgumentError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


#: Checkpoint metrics: ``func(model, params, data) -> pandas.DataFrame`` with columns
#: ``metric, value`` (plus ``layer`` / ``split`` where meaningful).
METRICS = Registry("metric")

#: Paper figures: ``func(out_dir: Path, quick: bool) -> list[Path]`` writing PNG + CSV.
FIGURES = Registry("figure")
