"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): one layer, one rank-one
update per request. The key is the MLP projection's input at the subject's last token (averaged over
context prefixes); the value is found by gradient search on the target; :func:`tether.edit.updates.rome_update`
writes it in. A batch is applied one request after another."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tether.core.errors import ConfigError
from tether.core.recipes import output, recipe
from tether.edit.bench import EditConfig, Workbench, run_edits
from tether.edit.model import Projection, keys, projection, search_delta
from tether.edit.requests import EditRequest
from tether.edit.updates import rome_update


class RomeConfig(EditConfig):
    """``tether edit rome``."""

    damping: float = Field(1e-4, ge=0, description="added to the keys' second moment (relative to its mean "
                           "diagonal) before it is inverted")


@dataclass
class Rome:
    """ROME on one layer of a workbench's model."""

    bench: Workbench
    projections: list[Projection]
    damping: float

    def apply(self, requests: Sequence[EditRequest]) -> list[float]:
        """One rank-one update per request, in order."""
        bench, (proj,) = self.bench, self.projections
        losses = []
        for request in requests:
            rows = bench.rows(request)
            found = search_delta(bench.model, bench.tokenizer, proj.module, rows, bench.essence_rows(request),
                                 bench.search)
            key = keys(bench.model, bench.tokenizer, proj, rows).mean(0)
            weight = proj.weight()
            proj.add(rome_update(weight, key, weight @ key + found.delta, bench.second_moment(proj),
                                 damping=self.damping))
            losses.append(found.loss)
        return losses


def build(cfg: RomeConfig) -> Any:
    """The method's factory for :func:`run_edits`.

    Raises:
        ConfigError: more than one layer.
    """
    if len(cfg.layers) != 1:
        raise ConfigError(f"layers={cfg.layers}: ROME rewrites exactly one layer (MEMIT and AlphaEdit spread an "
                          "edit over several)")

    def make(bench: Workbench) -> Rome:
        return Rome(bench, [projection(bench.model, cfg.layers[0])], cfg.damping)

    return make


@recipe("rome", group="edit", config=RomeConfig,
        summary="Rewrite facts with ROME: a rank-one update of one MLP layer per edit, judged by generation.",
        example="tether edit rome --config rome/world --set mode=independent --out runs/rome",
        consumes={"model": "model.path"}, produces={"model": output("model"), "edits": output("edit.json")})
def run(cfg: RomeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Edit with ROME; see :mod:`tether.edit.bench` for the modes and what is written."""
    return run_edits(cfg, build(cfg), command="edit rome", resume=resume)
