"""Name -> component lookup, so that adding a trigger or a defence touches one file.

Each entry keeps a one-line description (the component's docstring by default), the dataclass
of its options, which the spec validates against and ``tradeoff list`` prints, and the component's
synthetic cut (:class:`SyntheticCut`, what it needs to be rehearsed on generated data). Every
registry is findable by its kind (``registry_of("trigger")``), which is how spec fields name their
choices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Generic, Optional, TypeVar

from tradeoff.core.errors import TradeoffError

T = TypeVar("T")

_ALL: dict[str, "Registry"] = {}


@dataclass(frozen=True)
class GeneratedFiles:
    """A dataset's generated stand-in files, in its real on-disk format."""

    folder: str  # under the generated data's root, where the dataset's loader looks
    write: Callable[..., None]  # (folder: Path, **shape): writes the files
    shape: dict  # the writer's size arguments (image counts, classes, image sizes)
    describe: Callable[..., str]  # (**shape) -> one line for a run folder's synthetic.json


@dataclass(frozen=True)
class StandInWeights:
    """Generated weights standing in for a released checkpoint that the spec fine-tunes from."""

    file: str  # under the generated data's root
    state: Callable[[], dict]  # the state dict to write
    description: str


@dataclass(frozen=True)
class SyntheticCut:
    """What a component needs to be rehearsed on generated data (``tradeoff sweep --synthetic``),
    layered on the preset when the spec uses it. A dataset declares its files and the budget its
    images allow; an objective its shortened schedule; a backdoor defence its reduced budget."""

    fields: dict = field(default_factory=dict)  # spec fields by dotted path ("train.steps": 2)
    where_set: dict = field(default_factory=dict)  # fields cut only where the spec sets them
    options: dict = field(default_factory=dict)  # the component's own options ("ibp_ramp_steps": 1)
    files: Optional[GeneratedFiles] = None
    weights: Optional[StandInWeights] = None  # model.checkpoint when the spec fine-tunes (from_scratch: false)


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    item: T
    description: str
    options: Optional[type]  # a dataclass of the component's options, or None
    synthetic: Optional[SyntheticCut] = None


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

    def register(self, name: str, options: Optional[type] = None, description: Optional[str] = None,
                 synthetic: Optional[SyntheticCut] = None) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            text = description if description is not None else first_line(getattr(item, "__doc__", None))
            self._entries[name] = Entry(name, item, text, options, synthetic)
            return item

        return add

    def declare_synthetic(self, name: str, synthetic: SyntheticCut) -> None:
        """Give a registered component its synthetic cut (for a cut declared in a module of its own,
        beside the component's package, rather than at the registration)."""
        self._entries[name] = dataclasses.replace(self.entry(name), synthetic=synthetic)

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
