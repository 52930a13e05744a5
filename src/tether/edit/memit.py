"""MEMIT (Meng et al. 2023, "Mass-Editing Memory in a Transformer"): many edits at once, spread over
several layers. For each request a target hidden state ``z`` is searched at the last edited layer's output;
then, layer by layer, what ``z`` still lacks is shared among the remaining layers and written into each
layer's MLP projection by least squares against the keys' second moment
(:func:`tether.edit.updates.memit_update`). AlphaEdit (:mod:`tether.edit.alphaedit`) is this loop with
another solver."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from tether.core.errors import ConfigError
from tether.core.recipes import output, recipe
from tether.edit.bench import EditConfig, Workbench, run_edits
from tether.edit.model import Projection, keys, projection, read_at, search_delta
from tether.edit.requests import EditRequest
from tether.edit.updates import memit_update
from tether.interp.sites import decoder_layers

# (projection, residuals d_out × n, keys d_in × n) -> ΔW
Solver = Callable[[Projection, Tensor, Tensor], Tensor]


class MultiLayerConfig(EditConfig):
    """What MEMIT and AlphaEdit share."""

    layers: list[int] = Field([0, 1], min_length=1, description="decoder layers sharing each edit, in order")


class MemitConfig(MultiLayerConfig):
    """``tether edit memit``."""

    preserve: float = Field(1.5e4, gt=0, description="λ: how much the keys of ordinary text weigh against the "
                            "edits in the least squares (1.5e4: MEMIT's GPT-J setting; the world's small model, whose "
                            "keys for a fact prompt all look alike, needs 100)")


@dataclass
class MultiLayer:
    """The MEMIT loop over ``projections`` (in layer order) with a per-layer ``solve``."""

    bench: Workbench
    projections: list[Projection]
    solve: Solver

    def apply(self, requests: Sequence[EditRequest]) -> list[float]:
        """One update per layer for the whole batch."""
        bench = self.bench
        last = decoder_layers(bench.model)[self.projections[-1].layer]
        rows = [bench.rows(r) for r in requests]
        found = [search_delta(bench.model, bench.tokenizer, last, rs, bench.essence_rows(r), bench.search)
                 for r, rs in zip(requests, rows, strict=True)]
        wanted = torch.stack([f.original + f.delta for f in found])
        unprefixed = [rs[0] for rs in rows]
        for i, proj in enumerate(self.projections):
            key = torch.stack([keys(bench.model, bench.tokenizer, proj, rs).mean(0) for rs in rows])
            now = read_at(bench.model, bench.tokenizer, last, unprefixed)
            share = (wanted - now) / (len(self.projections) - i)
            proj.add(self.solve(proj, share.T, key.T))
        return [f.loss for f in found]


def projections(model: Any, layers: Sequence[int]) -> list[Projection]:
    """The MLP projections of ``layers``, sorted by depth."""
    return sorted((projection(model, layer) for layer in layers), key=lambda p: p.layer)


def build(cfg: MemitConfig) -> Any:
    """The method's factory for :func:`run_edits`."""

    def make(bench: Workbench) -> MultiLayer:
        chosen = projections(bench.model, cfg.layers)
        check_reach(bench, chosen)

        def solve(proj: Projection, residuals: Tensor, key: Tensor) -> Tensor:
            return memit_update(residuals, key, bench.second_moment(proj), preserve=cfg.preserve)

        return MultiLayer(bench, chosen, solve)

    return make


def check_reach(bench: Workbench, chosen: Sequence[Projection]) -> None:
    """Refuse a last edited layer whose output at the edit token reaches no later token.

    Raises:
        ConfigError: the last edited layer is the model's last and edits are made at the subject's token.
    """
    if bench.token == "subject" and chosen[-1].layer == len(decoder_layers(bench.model)) - 1:
        raise ConfigError(f"layers={[p.layer for p in chosen]}: the model's last layer writes nothing a later "
                          "token reads, so a target searched at the subject's token there cannot move the answer; "
                          "end the layers earlier, or set token=last")


@recipe("memit", group="edit", config=MemitConfig,
        summary="Rewrite many facts at once with MEMIT: least-squares updates spread over several MLP layers.",
        example="tether edit memit --config memit/world --set batch=10 --out runs/memit",
        consumes={"model": "model.path"}, produces={"model": output("model"), "edits": output("edit.json")})
def run(cfg: MemitConfig, *, resume: bool = False) -> dict[str, Any]:
    """Edit with MEMIT; see :mod:`tether.edit.bench` for the modes and what is written."""
    return run_edits(cfg, build(cfg), command="edit memit", resume=resume)
