"""Name -> component lookup, so that adding a trigger or a defence touches one file.

Each entry keeps a one-line description (the component's docstring by default) and the dataclass
of its options, which the spec validates against and ``tradeoff list`` prints. Every registry is
findable by its kind (``registry_of("trigger")``), which is how spec fields name their choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

from tradeoff.errors import TradeoffError

T = TypeVar("T")

_ALL: dict[str, "Registry"] = {}


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    item: T
    description: str
    options: Optional[type]  # a dataclass of the component's options, or None


def first_line(doc: Optional[str]) -> str:
    """A docstring's first paragraph, on one line."""
    return " ".join(line.strip() for line in (doc or "").strip().split("\n\n")[0].splitlines())


class Registry(Generic[T]):
    """Components of one kind. ``listed``: shown by ``tradeoff list`` under ``plural``."""

    def __init__(self, kind: str, plural: Optional[str] = None, listed: bool = True):
        if kind in _ALL:
            raise ValueError(f"a registry of {kind!r} exists already")
        self.kind = kind
        self.plural = plural or kind.replace(" ", "-") + "s"
        self.listed = listed
        self._entries: dict[str, Entry[T]] = {}
        _ALL[kind] = self

    def register(self, name: str, options: Optional[type] = None,
                 description: Optional[str] = None) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            text = description if description is not None else first_line(getattr(item, "__doc__", None))
            self._entries[name] = Entry(name, item, text, options)
            return item

        return add

    def unregister(self, name: str) -> None:
        """Remove a component (for code that registers one temporarily, such as tests)."""
        self._entries.pop(name, None)

    def entry(self, name: str, where: Optional[str] = None) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            at = f"{where}: " if where else ""
            raise TradeoffError(
                f"{at}unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}."
            ) from None

    def get(self, name: str, where: Optional[str] = None) -> T:
        return self.entry(name, where).item

    def options_or_default(self, name: str, options):
        """``options``, or the component's default options when a section was built without them."""
        if options is not None:
            return options
        cls = self.entry(name).options
        return cls() if cls is not None else None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def registry_of(kind: str) -> Registry:
    """The registry of a component kind (registries exist once their module is imported)."""
    try:
        return _ALL[kind]
    except KeyError:
        raise TradeoffError(f"no registry of {kind!r}; known: {', '.join(sorted(_ALL))}.") from None


def all_registries() -> list[Registry]:
    return [r for r in _ALL.values() if r.listed]
