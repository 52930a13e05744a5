"""Typed configs: one pydantic model per command, YAML for storage, dotted overrides.

Every command's config subclasses :class:`Config` (``extra="forbid"``), so an unknown
key is an error rather than a silently ignored typo. Errors name the dotted key and,
where it helps, the allowed keys or values::

    config key 'optim.lrr' is not allowed; allowed keys: lr, weight_decay, warmup_steps
    config key 'optim.schedule': Input should be 'constant', 'linear' or 'cosine' (got 'cosin')
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Collection, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from tether.core.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every typed config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def packaged_config_dir() -> Path:
    """The directory of configs shipped inside the package (``tether/configs``)."""
    return Path(str(resources.files("tether") / "configs"))


def packaged_configs() -> list[str]:
    """Names of every shipped config, e.g. ``["sft/demo"]``."""
    root = packaged_config_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file path: an existing file, or a shipped config name such as ``sft/demo``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = packaged_config_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        known = ", ".join(packaged_configs())
        raise ConfigError(f"config file {str(name_or_path)!r} not found (shipped configs: {known})")
    raise ConfigError(f"no config named {str(name_or_path)!r}; shipped configs: {', '.join(packaged_configs())}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"optim.lr=1e-5"`` into (``["optim", "lr"]``, value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with every dotted override set, creating nested tables as needed."""
    result = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                prefix = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {text!r}: config key {prefix!r} is a value, not a table")
            node = child
        node[keys[-1]] = value
    return result


def load_config(
    cls: type[C], source: str | Path | None = None, overrides: Sequence[str] = ()
) -> C:
    """Build a ``cls`` from an optional YAML file (path or shipped name) and dotted overrides.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value does not validate.
    """
    data: dict[str, Any] = {}
    where = "overrides"
    if source is not None:
        path = resolve_config_path(source)
        where = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{line} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(loaded).__name__}")
        data = loaded
    for text in overrides:
        data = with_defaults_along(cls, data, parse_override(text)[0][:-1])
    data = apply_overrides(data, overrides)
    overridden = {".".join(parse_override(o)[0]) for o in overrides}
    return validate_config(cls, data, where=where, overridden=overridden)


def with_defaults_along(cls: type[BaseModel], data: dict[str, Any], path: Sequence[str]) -> dict[str, Any]:
    """``data`` with each nested model table along ``path`` that ``data`` lacks filled in from the field's
    default, so that ``stage.set=[...]`` changes one key of a default ``stage`` instead of replacing the whole
    table (which would then miss its required keys). A copy where anything is added; ``data`` otherwise."""
    model: type[BaseModel] | None = cls
    node, result = data, data
    for depth, key in enumerate(path):
        field = model.model_fields.get(key) if model is not None else None
        if field is None or not isinstance(node, dict):
            break
        if key not in node:
            # Only a table of one model type: a union's or a registry kind's default (a loss of one kind) is no
            # base for the keys of another kind the override may be choosing.
            plain = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            default = field.get_default(call_default_factory=True) if plain else None
            if not isinstance(default, BaseModel) or type(default) is not field.annotation:
                break
            if result is data:  # copy once, then fill in the copy
                result = _deep_copy(data)
                node = result
                for step in path[:depth]:
                    node = node[step]
            node[key] = default.model_dump()
        node = node[key]
        model = model_in(field.annotation)
    return result


def validate_config(cls: type[C], data: dict[str, Any], *, where: str = "config",
                    overridden: Collection[str] = ()) -> C:
    """Validate a plain dict as ``cls``, turning pydantic's errors into one readable line.

    Keys in ``overridden`` came from ``--set``; their errors say so instead of naming the file.
    """
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(cls, exc, where=where, overridden=overridden)) from None


def dump_config(cfg: BaseModel) -> str:
    """The config as YAML, every field written out (defaults included), keys in declaration order."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def format_validation_error(cls: type[BaseModel], exc: ValidationError, *, where: str = "config",
                            overridden: Collection[str] = ()) -> str:
    """One clause per problem, joined by '; ', each naming the dotted key at fault and its source."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        key = ".".join(loc) or "<root>"
        from_set = any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in overridden)
        source = "--set" if from_set else where
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(cls, list(error["loc"][:-1]))
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            parts.append(f"{source}: config key {key!r} is not allowed{hint}")
        elif error["type"] == "missing":
            parts.append(f"{source}: config key {key!r} is required")
        else:
            parts.append(f"{source}: config key {key!r}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(parts)


def _allowed_keys(cls: type[BaseModel], loc: list[Any]) -> list[str]:
    """Field names of the (nested) model that ``loc`` points into."""
    model: type[BaseModel] | None = cls
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        model = model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``Foo``, ``Foo | None`` or ``list[Foo]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = model_in(arg)
            if found is not None:
                return found
    return None


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields a ``str.format`` template uses (configs that hold templates check them)."""
    import string

    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def signature_config(fn: Callable[..., Any], *, key: str, name: str) -> type[Config]:
    """A config class for a registered function's knobs: ``key`` (fixed to ``name``) plus one field per
    keyword-only parameter of ``fn``, typed by its annotation, defaulting to its default and described by
    its line under ``Args:`` in the docstring. The function stays the one place its knobs are declared.

    Raises:
        TypeError: a keyword-only parameter has no default (a config could not be complete without it).
    """
    import inspect
    from typing import Literal

    from pydantic import Field, create_model

    hints = typing.get_type_hints(fn)
    described = _argument_descriptions(fn.__doc__ or "")
    fields: dict[str, Any] = {key: (Literal[name], Field(name, description=f"this is {name}"))}  # type: ignore[valid-type]
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{fn.__qualname__}: keyword-only parameter {parameter.name!r} needs a default")
        fields[parameter.name] = (hints[parameter.name],
                                  Field(parameter.default, description=described.get(parameter.name, "")))
    class_name = "".join(part.capitalize() for part in re.split(r"\W+", name) if part) + "Config"
    return create_model(class_name, __base__=Config, __module__=fn.__module__, **fields)  # type: ignore[no-any-return]


def _argument_descriptions(docstring: str) -> dict[str, str]:
    """``{parameter: description}`` from a Google-style ``Args:`` section (continuation lines joined)."""
    out: dict[str, str] = {}
    lines = docstring.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent, current = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        match = re.match(r"\s*(\w+)(?: \([^)]*\))?: (.*)", line) if width == indent else None
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out
