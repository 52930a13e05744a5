"""Every recipe's declaration holds: the config keys it says it consumes by exist in its config class, its
run takes resume, and its command appears in its group."""

import inspect

import pytest
from pydantic import BaseModel

from tether.core.config import Config
from tether.core.recipes import CONFIG_KINDS, RECIPES


def _has_key(config: type[BaseModel], dotted: str) -> bool:
    from tether.core.config import model_in

    model: type[BaseModel] | None = config
    for part in dotted.split("."):
        if model is None or part not in model.model_fields:
            return False
        model = model_in(model.model_fields[part].annotation)
    return True


@pytest.mark.parametrize("name", RECIPES.names())
def test_a_recipes_declaration_matches_its_config_and_run(name):
    recipe = RECIPES.get(name)
    assert issubclass(recipe.config, Config) and CONFIG_KINDS.get(name) is recipe.config
    for kind, key in recipe.consumes.items():
        assert _has_key(recipe.config, key), f"{name} consumes {kind} by {key!r}, which its config does not have"
    assert _has_key(recipe.config, "out") and "resume" in inspect.signature(recipe.run).parameters
    assert recipe.summary and recipe.example.startswith(recipe.command)


def test_a_missing_key_is_caught():
    assert not _has_key(RECIPES.get("sft").config, "model.nope") and _has_key(RECIPES.get("sft").config, "model.path")


def test_recipes_that_read_data_rows_take_skip_bad():
    from tether.cli.recipes import _reads_rows

    takes = {name for name in RECIPES.names() if _reads_rows(RECIPES.get(name).config)}
    # feedback's data section is optional (it may relabel a preference file instead); it reads rows all the same.
    assert takes == {"sft", "irl", "dpo", "rm", "grpo", "rloo", "ppo", "critique", "feedback", "distill"}
