from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from tether.core.config import Config, apply_overrides, dump_config, load_config, packaged_configs
from tether.core.errors import ConfigError
from tether.core.recipes import CONFIG_KINDS


class Optim(Config):
    lr: float = 1e-3
    schedule: Literal["constant", "cosine"] = "cosine"


class Job(Config):
    name: str = Field("job")
    steps: int = 10
    optim: Optim = Optim()
    tags: list[str] = []


def test_dotted_overrides_set_nested_values_parsed_as_yaml():
    data = apply_overrides({"optim": {"lr": 1}}, ["optim.lr=1e-5", "steps=3", "tags=[a, b]", "new.deep.key=true"])
    assert data == {"optim": {"lr": "1e-5"}, "steps": 3, "tags": ["a", "b"], "new": {"deep": {"key": True}}}
    cfg = load_config(Job, None, ["optim.lr=1e-5", "steps=3"])
    assert cfg.optim.lr == pytest.approx(1e-5)
    assert cfg.steps == 3


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config(Job, None, ["optim.lrr=1"])
    message = str(err.value)
    assert "'optim.lrr' is not allowed" in message
    assert "allowed keys: lr, schedule" in message


def test_wrong_choice_names_allowed_values():
    with pytest.raises(ConfigError) as err:
        load_config(Job, None, ["optim.schedule=cosin"])
    assert "'optim.schedule'" in str(err.value)
    assert "'constant' or 'cosine'" in str(err.value)
    assert "cosin" in str(err.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"config key 'steps'.*valid integer.*'many'"):
        load_config(Job, None, ["steps=many"])


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'steps' is a value"):
        apply_overrides({"steps": 3}, ["steps.x=1"])
    # where the file does not set the key, validation names it instead
    with pytest.raises(ConfigError, match="config key 'steps'"):
        load_config(Job, None, ["steps.x=1"])


def test_yaml_file_roundtrips_verbatim(tmp_path: Path):
    cfg = load_config(Job, None, ["name=x", "optim.schedule=constant"])
    path = tmp_path / "job.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(Job, path) == cfg


def test_bad_yaml_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\nsteps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ is not valid YAML"):
        load_config(Job, path)


def test_missing_config_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Job, "no/such/file.yaml")


@pytest.mark.parametrize("name", packaged_configs())
def test_every_shipped_config_validates_and_its_dump_reloads(name: str, tmp_path: Path):
    kind = name.split("/")[0]
    assert kind in CONFIG_KINDS, f"shipped config {name} has no config kind registered"
    cfg = load_config(CONFIG_KINDS.get(kind), name)
    assert isinstance(cfg, Config)
    # A run writes its resolved config, every field out, to DIR/config.yaml; --config DIR/config.yaml must
    # give the same config back (defaults written out are not settings of the other tier, kind, ...).
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(CONFIG_KINDS.get(kind), path) == cfg


def test_there_are_shipped_configs():
    assert "sft/demo" in packaged_configs()


def test_a_functions_keyword_only_parameters_become_its_config():
    from tether.core.config import signature_config

    def knobbed(x: float, *, beta: float = 0.5, mode: str = "a") -> float:
        """A knobbed function.

        Args:
            beta: how strong
                it is
            mode: which way
        """
        return x * beta

    cls = signature_config(knobbed, key="variant", name="my-knob")
    assert cls.__name__ == "MyKnobConfig"
    assert cls().model_dump() == {"variant": "my-knob", "beta": 0.5, "mode": "a"}
    assert cls.model_fields["beta"].description == "how strong it is"
    with pytest.raises(ValueError, match="beta"):
        cls(beta="strong")
    with pytest.raises(ValueError, match="variant"):
        cls(variant="other")

    def no_default(x: float, *, beta: float) -> float:
        return x

    with pytest.raises(TypeError, match="needs a default"):
        signature_config(no_default, key="variant", name="x")


class Step(Config):
    config: str
    set: list[str] = []


class Pipeline(Config):
    train: Step = Field(default_factory=lambda: Step(config="sft/world", set=["a=1"]))
    inner: Job = Field(default_factory=lambda: Job(name="inner", optim=Optim(lr=0.5)))
    maybe: Step | None = None


def test_an_override_of_one_key_keeps_the_rest_of_a_default_table(tmp_path: Path):
    cfg = load_config(Pipeline, None, ["train.set=[b=2]", "inner.optim.schedule=constant"])
    assert cfg.train == Step(config="sft/world", set=["b=2"])  # config kept: before, "train.config is required"
    assert cfg.inner.name == "inner" and cfg.inner.optim.lr == 0.5 and cfg.inner.optim.schedule == "constant"
    # A table the file gives is not filled from defaults: the file's keys are the table.
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  set: [c=3]\n")
    with pytest.raises(ConfigError, match="train.config' is required"):
        load_config(Pipeline, path, ["train.set=[b=2]"])
    # A default of None, or a union's default, is no base: the override's table is the table.
    with pytest.raises(ConfigError, match="maybe.config' is required"):
        load_config(Pipeline, None, ["maybe.set=[x=1]"])
