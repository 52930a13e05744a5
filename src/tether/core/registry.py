"""Named registries for extension points (losses, scorers, datasets, attacks, ...).

Registries are used at the edges only: configs and the CLI name things, Python callers
pass objects. Third-party packages can add entries through the ``tether.plugins``
entry-point group: each entry point is a module imported once, whose import registers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from tether.core.errors import UserError

T = TypeVar("T")

_plugins_loaded = False


def load_plugins() -> None:
    """Import every module registered under the ``tether.plugins`` entry-point group, once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group="tether.plugins"):
        entry.load()


class Registry(Generic[T]):
    """A mapping from names to objects of one kind, filled by a decorator.

    Example:
        >>> LOSSES: Registry[Callable] = Registry("loss")
        >>> @LOSSES.register("dpo")
        ... def dpo_loss(...): ...
        >>> LOSSES.get("dpo")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``; a second use of a name is an error."""

        def decorate(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return decorate

    def get(self, name: str) -> T:
        """The entry called ``name``; a :class:`UserError` listing the known names if absent."""
        if name not in self._items:
            load_plugins()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
