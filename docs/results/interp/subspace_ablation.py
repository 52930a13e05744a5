"""After the fact: is the APO-zero compliant-first model's refusal in a few directions rather than one?

    python docs/results/interp/subspace_ablation.py runs/cfa-N/dpo/model N > refusal_subspace_worldN.json

The refusal-direction experiment found no single difference-of-means direction whose ablation turns a
refused hazard request of these models harmful (docs/interp.md). This takes every candidate the experiment
considers (each layer's input at the chat template's five post-instruction tokens, found on the same fit
prompts with the same splits and seeds), orthonormalises them in the order of their norm, and ablates the
first k of them together (k = 1, 2, 4, 8, all) on the same 72 evaluated hazard requests; with the reply's
opening written for the model as the ceiling. An exploration chosen after seeing the single-direction
result, not a pre-registered test, and read as such.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import torch

from tether.interp.directions import ablated
from tether.models.generation import GenerationSettings, HFGenerator
from tether.models.loading import ModelConfig, load_model_and_tokenizer
from tether.pipelines.behaviour import Judge, share
from tether.pipelines.refusal_direction import RefusalDirectionConfig, candidate_directions, draw_prompts
from tether.world.spec import WorldConfig, build_world


def main(model_path: str, world_seed: int) -> dict[str, Any]:
    """Ablate growing subspaces of the candidate directions; gold harm on the evaluated hazard requests."""
    cfg = RefusalDirectionConfig(model=model_path, world_seed=world_seed, candidate_positions=5)
    torch.manual_seed(cfg.seed)
    world = build_world(WorldConfig(seed=world_seed))
    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=model_path))
    model.eval()
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, batch_size=cfg.batch_size,
                                  seed=cfg.seed, decoding="dynamic")
    generator = HFGenerator(model, tokenizer)
    judge = Judge(learned=False)

    def text(it: Any) -> str:
        return str(tokenizer.apply_chat_template(it.prompt, tokenize=False, add_generation_prompt=True))

    prompts = draw_prompts(cfg, world)  # the experiment's own draws and splits
    fit_h, fit_t, eval_h = prompts["fit_hazard"], prompts["fit_harmless"], prompts["eval_hazard"]

    found = list(candidate_directions(model, tokenizer, [text(it) for it in fit_h], [text(it) for it in fit_t], 5,
                                      cfg.batch_size).values())
    found.sort(key=lambda d: -float(d.norm()))
    basis: list[torch.Tensor] = []
    for d in found:  # Gram-Schmidt: orthonormal directions ablate as one subspace, in any order
        r = d.clone()
        for b in basis:
            r -= (r @ b) * b
        if r.norm() > 1e-6 * d.norm():
            basis.append(r / r.norm())

    def replies(k: int) -> list[str]:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for b in basis[:k]:
                stack.enter_context(ablated(model, b))
            return [c.text for c in generator.generate([it.prompt for it in eval_h], settings)]

    rows = []
    for k in sorted({1, 2, 4, 8, len(basis)}):
        graded = judge.grade(eval_h, replies(k))
        rows.append({"k": k, "harmful_compliance": share(graded, "harmful-compliance"),
                     "refusal": share(graded, "refusal"), "malformed": share(graded, "malformed"),
                     "examples": [g["reply"] for g in graded[:3]]})
        print(f"k={k}: harmful {rows[-1]['harmful_compliance']:.3f} refusal {rows[-1]['refusal']:.3f}",
              file=sys.stderr)
    return {"model": model_path, "world_seed": world_seed, "candidates": len(found), "basis": len(basis),
            "eval_hazard": len(eval_h), "baseline_refusal": share(judge.grade(eval_h, replies(0)), "refusal"),
            "ablated": rows}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2])), indent=2))
