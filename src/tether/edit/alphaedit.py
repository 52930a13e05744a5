"""AlphaEdit (Fang et al. 2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models"):
MEMIT's loop with each update confined to the null space of ordinary text's keys, and the keys of earlier
edits kept in the least squares, so that sequential edits disturb neither preserved knowledge nor each other
(:func:`tether.edit.updates.alphaedit_update`)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from tether.core.recipes import output, recipe
from tether.edit.bench import Workbench, run_edits
from tether.edit.memit import MultiLayer, MultiLayerConfig, check_reach, projections
from tether.edit.model import Projection
from tether.edit.updates import alphaedit_update, null_space_projector


class AlphaEditConfig(MultiLayerConfig):
    """``tether edit alphaedit``."""

    null_threshold: float = Field(1e-2, ge=0, lt=1, description="key directions whose second-moment eigenvalue is "
                                  "at most this share of the largest form the null space edits are confined to")
    l2: float = Field(10.0, gt=0, description="ridge term of the least squares")


def build(cfg: AlphaEditConfig) -> Any:
    """The method's factory for :func:`run_edits`: each build starts with no earlier edits' keys."""

    def make(bench: Workbench) -> MultiLayer:
        chosen = projections(bench.model, cfg.layers)
        check_reach(bench, chosen)
        projectors: dict[int, Tensor] = {}
        previous: dict[int, Tensor] = {}

        def solve(proj: Projection, residuals: Tensor, key: Tensor) -> Tensor:
            if proj.layer not in projectors:
                projectors[proj.layer] = null_space_projector(bench.second_moment(proj), threshold=cfg.null_threshold)
                previous[proj.layer] = torch.zeros_like(projectors[proj.layer])
            delta = alphaedit_update(residuals, key, projectors[proj.layer], previous=previous[proj.layer], l2=cfg.l2)
            previous[proj.layer] = previous[proj.layer] + key @ key.T
            return delta

        return MultiLayer(bench, chosen, solve)

    return make


@recipe("alphaedit", group="edit", config=AlphaEditConfig,
        summary="Rewrite facts with AlphaEdit: MEMIT's updates projected onto the null space of preserved keys.",
        example="tether edit alphaedit --config alphaedit/world --set batch=10 --out runs/alphaedit",
        consumes={"model": "model.path"}, produces={"model": output("model"), "edits": output("edit.json")})
def run(cfg: AlphaEditConfig, *, resume: bool = False) -> dict[str, Any]:
    """Edit with AlphaEdit; see :mod:`tether.edit.bench` for the modes and what is written."""
    return run_edits(cfg, build(cfg), command="edit alphaedit", resume=resume)
