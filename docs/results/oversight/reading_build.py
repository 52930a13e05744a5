"""Can a world build learn to read? Pretrain on reading lessons, then ask test reading questions.

    python docs/results/oversight/reading_build.py FRACTION STEPS LR [SEED] > reading_build_....json

Builds the `small` base model with ``reading_fraction`` FRACTION of its corpus reading lessons
(tether.world.reading.reading_document), STEPS optimizer steps and learning rate LR, world SEED (0), then asks
200 ``test`` reading questions (fresh names no lesson used) two ways: openly ("What is the capital of X?",
greedy, right when the reply holds the true value) and with two options (right when the letter of the truth
has the higher log-probability). Chance is 0% and 50%. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tether.core.stats import wilson_interval
from tether.world.build import SIZES, WorldBuildConfig, build_base_model
from tether.world.corpus import render_chatml
from tether.world.reading import reading_questions
from tether.world.spec import WorldConfig, build_world


def main(fraction: float, steps: int, lr: float, seed: int = 0) -> dict[str, object]:
    """Build (or reuse) the model and measure it; the JSON the script prints."""
    spec = SIZES.get("small").model_copy(update={"reading_fraction": fraction, "steps": steps, "lr": lr})
    built = build_base_model(WorldBuildConfig(world=WorldConfig(seed=seed), size="small", model=spec))
    model = AutoModelForCausalLM.from_pretrained(built["model"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(built["model"])
    letters = [tokenizer.encode(x, add_special_tokens=False)[0] for x in "AB"]
    questions = reading_questions(build_world(WorldConfig(seed=seed)), 200, "test")
    open_right = subject_copied = choice_right = 0
    examples = []
    for q in questions:
        asked = f"Text: {q.source}\nQuestion: {q.question}"
        ids = tokenizer(render_chatml([{"role": "user", "content": asked}], add_generation_prompt=True),
                        return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=24, do_sample=False)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        open_right += q.options[q.answer] in text
        subject_copied += q.subject in text
        if len(examples) < 5:
            examples.append({"question": q.question, "truth": q.options[q.answer], "reply": text})
        options = f"{asked}\nA: {q.options[0]}\nB: {q.options[1]}\nWhich answer is right?"
        ids = tokenizer(render_chatml([{"role": "user", "content": options}], add_generation_prompt=True),
                        return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        choice_right += int(bool(logits[letters[0]] > logits[letters[1]]) == (q.answer == 0))
    n = len(questions)
    return {"command": f"python docs/results/oversight/reading_build.py {fraction} {steps} {lr} {seed}",
            "build": {"reading_fraction": fraction, "steps": steps, "lr": lr, "seed": seed,
                      "final_loss": built.get("final_loss"), "seconds": built.get("seconds")},
            "open_answer_right": wilson_interval(open_right, n).as_dict(),
            "question_subject_copied": wilson_interval(subject_copied, n).as_dict(),
            "two_options_right": wilson_interval(choice_right, n).as_dict(), "examples": examples}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(float(args[0]), int(args[1]), float(args[2]), *(int(a) for a in args[3:4])), indent=2))
