"""Registries: the one mechanism behind every extension point (recipes, losses, scorers, attacks, ...).

A registry maps names to implementations of one kind and is filled by decorators where the
implementations are written::

    PREFERENCE_LOSSES: Registry[PreferenceLossKind] = Registry("preference loss")

    @SCORERS.register("refusal")
    class RefusalConfig(ScorerConfig): ...

Names are used at the edges only (configs and the CLI name things; Python callers pass objects).

Where entries come from:

- **tether's own**: a module registers its entries when it is imported. A lookup that misses (or a
  listing) first imports every tether module once (:func:`discover`), so nothing has to be listed by
  hand and ``import tether.train.sft`` still loads only what SFT needs.
- **plugins**: a third-party package declares modules under the ``tether.plugins`` entry-point group
  (``[project.entry-points."tether.plugins"] mine = "my_package.tether_plugin"``); each is imported once,
  after tether's own modules, and registers the same way.

Every registry is listed by ``tether plugins list`` with each entry's name and the module that
registered it.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from tether.core.errors import ConfigError, UserError

T = TypeVar("T")

PLUGIN_GROUP = "tether.plugins"
# Modules a discovery does not import: the command line (it only consults registries) and entry scripts.
_NOT_DISCOVERED = ("tether.cli", "tether.__main__")

_REGISTRIES: dict[str, Registry[Any]] = {}
_discovered = False
_plugins_loaded = False


def discover() -> None:
    """Import every tether module (registering tether's own entries), then every plugin; once per process."""
    global _discovered
    if not _discovered:
        _discovered = True  # set first: a module imported below may itself look something up
        import tether

        for module in pkgutil.walk_packages(tether.__path__, "tether."):
            if not module.name.startswith(_NOT_DISCOVERED):
                importlib.import_module(module.name)
    load_plugins()


def load_plugins() -> None:
    """Import every module registered under the ``tether.plugins`` entry-point group, once.

    Raises:
        UserError: a plugin module fails to import (named with its entry point).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as exc:
            raise UserError(f"plugin {entry.name!r} ({entry.value}) failed to import: "
                            f"{type(exc).__name__}: {exc}") from exc


class Entry(NamedTuple):
    """One registered name: what it maps to and the module that registered it."""

    name: str
    item: Any
    module: str


class Registry(Generic[T]):
    """A mapping from names to implementations of one kind, filled by a decorator.

    Example:
        >>> WIDGETS: Registry[Callable[[], int]] = Registry("widget")
        >>> @WIDGETS.register("one")
        ... def one() -> int:
        ...     return 1
        >>> WIDGETS.get("one")()
        1
    """

    kind: str
    description: str

    def __init__(self, kind: str, *, description: str = "") -> None:
        if kind in _REGISTRIES:
            raise ValueError(f"a registry of {kind!r} already exists ({_REGISTRIES[kind].description})")
        self.kind, self.description = kind, description
        self._entries: dict[str, Entry] = {}
        _REGISTRIES[kind] = self

    def register(self, name: str, *, module: str | None = None) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``; a name registered twice is an error.

        ``module``: where the entry comes from, for ``tether plugins list``; default: the module that
        called ``register`` (the one the decorator is written in).
        """
        origin = module or sys._getframe(1).f_globals.get("__name__", "?")

        def decorate(item: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._entries[name].module})")
            self._entries[name] = Entry(name, item, origin)
            return item

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``.

        Raises:
            UserError: no such entry, after tether's modules and the plugins were imported (lists the known).
        """
        entry = self._entries.get(name)
        if entry is None:
            discover()
            entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return entry.item  # type: ignore[no-any-return]

    def loaded(self, name: str) -> Entry | None:
        """The entry called ``name`` if a module imported so far registered it (no discovery: a cheap look
        for a caller that has just imported the module it expects the entry in)."""
        return self._entries.get(name)

    def entries(self) -> list[Entry]:
        """Every entry (tether's own and the plugins'), sorted by name."""
        discover()
        return [self._entries[name] for name in sorted(self._entries)]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return [e.name for e in self.entries()]

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def registries() -> list[Registry[Any]]:
    """Every registry, after discovery (so each extension point and all its entries are present)."""
    discover()
    return [_REGISTRIES[kind] for kind in sorted(_REGISTRIES)]


def kind_config(registry: Registry[Any], raw: Any, *, key: str = "kind", default: str | None = None) -> Any:
    """Validate a ``{key: NAME, ...}`` mapping (or a bare ``NAME``) against the config class registered as
    NAME (or, for a registry of functions, the config class of NAME's knobs).

    Raises:
        ConfigError: ``raw`` is not a mapping, has no ``key`` (and there is no ``default``), names no
            registered entry, or does not validate.
    """
    try:
        return _kind_config(registry, raw, key, default)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _config_class(registry: Registry[Any], name: Any) -> type[BaseModel]:
    try:
        entry = registry.get(str(name))
    except UserError as exc:
        raise ValueError(str(exc)) from None
    # Entries are config classes, or (registered functions) carry the config class of their knobs.
    return entry if isinstance(entry, type) else entry.config  # type: ignore[no-any-return]


def _kind_config(registry: Registry[Any], raw: Any, key: str, default: str | None) -> Any:
    if isinstance(raw, BaseModel):  # a config built in Python: it must be the class its kind is registered as
        expected = _config_class(registry, getattr(raw, key, default))
        if not isinstance(raw, expected):
            raise ValueError(f"a {registry.kind} {getattr(raw, key, default)!r} must be a {expected.__name__}, "
                             f"got a {type(raw).__name__}")
        return raw
    if isinstance(raw, str):  # a bare name: that entry with its defaults
        raw = {key: raw}
    if not isinstance(raw, dict):
        raise ValueError(f"a {registry.kind} is a mapping with a {key!r} key, got {type(raw).__name__}")
    name = raw.get(key, default)
    if name is None:
        raise ValueError(f"a {registry.kind} needs a {key!r} key; known: {', '.join(registry.names())}")
    config_class = _config_class(registry, name)
    # A class without the key field (one kind, named by default) takes the mapping as it is.
    data = {**raw, key: name} if key in config_class.model_fields else {k: v for k, v in raw.items() if k != key}
    return config_class.model_validate(data)


class Kind:
    """Marks a config field as one entry of a registry of config classes::

        scorers: list[Annotated[ScorerConfig, Kind(SCORERS)]]

    Each ``{key: NAME, ...}`` mapping is validated against the class registered as NAME (pydantic reports
    a problem against the config key at fault) and dumped with that class's own fields, not only the
    base class's. Type checkers see the base class.
    """

    def __init__(self, registry: Registry[Any], *, key: str = "kind", default: str | None = None) -> None:
        self.registry, self.key, self.default = registry, key, default

    def validate(self, raw: Any) -> Any:
        """The registered class's instance for ``raw``."""
        return _kind_config(self.registry, raw, self.key, self.default)

    def __get_pydantic_core_schema__(self, source_type: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Validated here, then accepted as is; "any" serialises by the runtime class (as SerializeAsAny).
        return core_schema.no_info_before_validator_function(self.validate, core_schema.any_schema())
