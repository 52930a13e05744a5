import subprocess
import sys
import textwrap
from typing import Annotated, Literal

import pytest
from pydantic import ValidationError

from tether.core.config import Config
from tether.core.errors import ConfigError, UserError
from tether.core.registry import Kind, Registry, kind_config, registries


def test_register_get_and_unknown_name_lists_known():
    reg: Registry[int] = Registry("widget (test)")
    reg.register("a")(1)
    reg.register("b")(2)
    assert reg.get("a") == 1
    assert reg.names() == ["a", "b"]
    with pytest.raises(UserError, match=r"unknown widget \(test\) 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(3)


def test_an_entry_remembers_the_module_that_registered_it():
    reg: Registry[int] = Registry("gadget (test)")
    reg.register("here")(1)
    reg.register("there", module="somewhere.else")(2)
    assert {e.name: e.module for e in reg.entries()} == {"here": __name__, "there": "somewhere.else"}


def test_a_second_registry_of_one_kind_is_refused():
    Registry("doohickey (test)")
    with pytest.raises(ValueError, match="already exists"):
        Registry("doohickey (test)")


@pytest.mark.slow  # a fresh interpreter that imports every tether module (8 s): slow tier
def test_membership_and_lookup_find_entries_of_modules_not_imported_yet():
    # A fresh interpreter: nothing of tether's but the registry module is imported, yet the world's model
    # source and the DPO loss are found (a miss imports tether's modules), and `in` sees them too.
    code = textwrap.dedent("""
        import sys
        from tether.models.loading import MODEL_SOURCES
        assert "tether.world.datasets" not in sys.modules
        assert "world" in MODEL_SOURCES
        from tether.losses.preference import PREFERENCE_LOSSES
        print(PREFERENCE_LOSSES.entries()[0].module)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "tether.losses.preference"


class _Base(Config):
    kind: str


_SHAPES: Registry[type[_Base]] = Registry("shape (test)")


@_SHAPES.register("circle")
class _Circle(_Base):
    kind: Literal["circle"] = "circle"
    radius: float = 1.0


@_SHAPES.register("square")
class _Square(_Base):
    kind: Literal["square"] = "square"
    side: float = 2.0


class _Drawing(Config):
    main: Annotated[_Base, Kind(_SHAPES, default="circle")]
    others: list[Annotated[_Base, Kind(_SHAPES)]] = []


def test_kind_config_validates_against_the_registered_class():
    assert kind_config(_SHAPES, {"kind": "square", "side": 3}) == _Square(side=3)
    with pytest.raises(ConfigError, match="unknown shape \\(test\\) 'hexagon'; known: circle, square"):
        kind_config(_SHAPES, {"kind": "hexagon"})
    with pytest.raises(ConfigError, match="needs a 'kind' key"):
        kind_config(_SHAPES, {"side": 3})


def test_a_config_object_must_be_the_class_its_kind_is_registered_as():
    assert kind_config(_SHAPES, _Circle(radius=2)) == _Circle(radius=2)
    assert kind_config(_SHAPES, "square") == _Square()   # a bare name: that kind with its defaults
    with pytest.raises(ConfigError, match="must be a _Square, got a _Circle"):
        kind_config(_SHAPES, _Circle.model_construct(kind="square"))


def test_a_kind_field_defaults_dumps_every_field_and_names_the_key_at_fault():
    drawing = _Drawing.model_validate({"main": {"radius": 4}, "others": [{"kind": "square"}]})
    assert drawing.model_dump() == {"main": {"kind": "circle", "radius": 4.0},
                                    "others": [{"kind": "square", "side": 2.0}]}
    with pytest.raises(ValidationError) as caught:
        _Drawing.model_validate({"main": {"kind": "circle", "sides": 3}})
    assert caught.value.errors()[0]["loc"] == ("main", "sides")


def test_registries_lists_every_extension_point():
    kinds = {r.kind for r in registries()}
    assert {"recipe", "config kind", "preference loss", "advantage estimator", "reward", "scorer", "attack",
            "converter", "suite", "prompt file format", "goal source", "model source", "dataset source"} <= kinds


def test_a_plugin_that_fails_to_import_is_named(tmp_path):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tether.plugins]\nbroken = broken_plugin_module\n")
    (tmp_path / "broken_plugin_module.py").write_text("raise RuntimeError('boom')\n")
    code = ("from tether.core.registry import load_plugins\n"
            "try:\n    load_plugins()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""}).stdout
    assert out.strip() == "UserError plugin 'broken' (broken_plugin_module) failed to import: RuntimeError: boom"
