"""A small explicit registry: ``name -> factory``, raising on unknown names."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from fedsec.errors import UnknownNameError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """An immutable-by-convention mapping of names to factories.

    Parameters
    ----------
    kind
        What the registry holds ("dataset", "model", ...); used in error messages.
    entries
        The initial ``name -> factory`` pairs.
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self._kind = kind
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str, factory: T) -> T:
        """Add ``factory`` under ``name``; refuse to overwrite an existing name."""
        if not name or name != name.strip():
            raise ValueError(f"{self._kind} name must be a non-empty string without spaces, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self._kind} {name!r} is already registered")
        self._entries[name] = factory
        return factory

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self._kind} {name!r}; choose one of: {', '.join(sorted(self._entries))}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
