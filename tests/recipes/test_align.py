"""tether.align end to end on a tiny random-init model with a user's own prompt and pair files (mechanics),
and the pieces that must hold whatever the model: resume, judge symmetry, log-prob scoring, the KL falling."""

import json

import pytest
import torch
import yaml

from tether.align import critique, distill, feedback
from tether.align.constitution import Constitution
from tether.align.feedback import AIJudge
from tether.core.config import load_config
from tether.core.errors import DataError
from tether.models.loading import ModelConfig, load_model_and_tokenizer
from tether.models.logprobs import continuation_logps

CONSTITUTION = {
    "name": "user", "layout": "conversation",
    "principles": [
        {"name": "kind", "critique_request": "Was that kind?", "revision_request": "Say it more kindly.",
         "preference_question": "Which is kinder?\n(A) {a}\n(B) {b}"},
        {"name": "short", "critique_request": "Was that short?", "revision_request": "Say it in fewer words.",
         "preference_question": "Which is shorter?\n(A) {a}\n(B) {b}", "weight": 2},
    ],
}


@pytest.fixture()
def user_files(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Tell me about {t}."}],
                                           "topic": t}) + "\n"
                               for t in ["cats", "rain", "tea", "maps", "bees", "salt", "iron", "moss"]))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}", "chosen": f"yes {i}", "rejected": "no"}) + "\n"
                             for i in range(5)))
    constitution = tmp_path / "constitution.yaml"
    constitution.write_text(yaml.safe_dump(CONSTITUTION))
    return {"prompts": prompts, "pairs": pairs, "constitution": constitution}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_critique_revise_writes_revisions_sft_and_pairs_and_resumes_to_the_same_rows(tmp_path, user_files, monkeypatch):
    overrides = ["model.path=tiny:llama", f"data.train={user_files['prompts']}",
                 f"constitution={user_files['constitution']}", "rounds=2", "chunk_prompts=3",
                 "generation.max_new_tokens=8", "critic_generation.max_new_tokens=8"]
    summary = critique.run(load_config(critique.CritiqueConfig, None, [*overrides, f"out={tmp_path / 'a'}"]))
    rows = _rows(tmp_path / "a" / "revisions.jsonl")
    assert [r["index"] for r in rows] == list(range(8)) and summary["prompts"] == 8
    assert all(len(r["rounds"]) == 2 and {x["principle"] for x in r["rounds"]} <= {"kind", "short"} for r in rows)
    assert all(r["topic"] for r in rows)  # the user's own columns travel with the rows
    sft = _rows(tmp_path / "a" / "sft.jsonl")
    assert all(s["messages"][-1] == {"role": "assistant", "content": r["revision"]}
               for s, r in zip(sft, [r for r in rows if r["revision"].strip()], strict=True))
    pairs = _rows(tmp_path / "a" / "pairs.jsonl")
    assert len(pairs) == summary["pairs"] == sum(r["revision"] != r["response"] for r in rows if r["revision"].strip())
    assert "gold_revision" not in summary  # no world metadata, no gold

    # A run killed during its second chunk, resumed: the same rows as the uninterrupted run.
    real, calls = critique.critique_and_revise, []

    def killed_in_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    b = load_config(critique.CritiqueConfig, None, [*overrides, f"out={tmp_path / 'b'}"])
    monkeypatch.setattr(critique, "critique_and_revise", killed_in_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        critique.run(b)
    assert len(_rows(tmp_path / "b" / "revisions.jsonl")) == 3
    monkeypatch.setattr(critique, "critique_and_revise", real)
    critique.run(b, resume=True)
    assert _rows(tmp_path / "b" / "revisions.jsonl") == rows


def test_continuation_logps_equal_a_manual_forward():
    model, tok = load_model_and_tokenizer(ModelConfig(path="tiny:llama"))
    contexts, conts = ["Hello there", "A longer context here"], [" friend", " yes"]
    got = continuation_logps(model, tok, contexts, conts, batch_size=2)
    for context, cont, value in zip(contexts, conts, got, strict=True):
        ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx_ids + tok(cont, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = model(input_ids=ids).logits.log_softmax(-1)[0]
        want = sum(logp[t - 1, ids[0, t]].item() for t in range(len(ctx_ids), ids.shape[1]))
        assert value == pytest.approx(want, abs=1e-4)


def test_next_token_logps_are_one_token_continuation_logps_from_one_forward():
    from tether.models.logprobs import next_token_logps

    model, tok = load_model_and_tokenizer(ModelConfig(path="tiny:llama"))
    contexts = ["Hello there", "A longer context here, padded against the first"]
    tokens = [tok(" A", add_special_tokens=False)["input_ids"][0], tok(" B", add_special_tokens=False)["input_ids"][0]]
    got = next_token_logps(model, tok, contexts, tokens, batch_size=2)
    for context, row in zip(contexts, got, strict=True):
        want = continuation_logps(model, tok, [context] * 2, [tok.decode([t]) for t in tokens])
        assert row == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("mode", ["choice", "critique"])
def test_judge_preferences_are_antisymmetric(mode):
    model, tok = load_model_and_tokenizer(ModelConfig(path="tiny:llama"))
    constitution = Constitution.model_validate({**CONSTITUTION, "judge": {"mode": mode}})
    judge = AIJudge(model, tok, constitution)
    prompt = [{"role": "user", "content": "Hi"}]
    principle = constitution.principles[0]
    forward = judge.compare([(prompt, "hello friend", "go away", principle)])[0]
    backward = judge.compare([(prompt, "go away", "hello friend", principle)])[0]
    assert 0 < forward < 1 and forward + backward == pytest.approx(1.0, abs=1e-6)


def test_feedback_relabels_a_users_pairs_and_samples_its_own(tmp_path, user_files):
    base = ["judge.path=tiny:llama", f"constitution={user_files['constitution']}", "judging.mode=choice"]
    summary = feedback.run(load_config(feedback.FeedbackConfig, None, [
        *base, f"pairs={user_files['pairs']}", "principles_per_pair=2", f"out={tmp_path / 'relabel'}"]))
    rows = _rows(tmp_path / "relabel" / "feedback.jsonl")
    prefs = _rows(tmp_path / "relabel" / "preferences.jsonl")
    assert summary["comparisons"] == 5 == len(rows) and len(prefs) == 5
    assert all(len(r["probs"]) == 2 and r["prob_first"] == pytest.approx(sum(r["probs"]) / 2, abs=1e-6) for r in rows)
    for r, p in zip(rows, prefs, strict=True):  # chosen is whichever the judge preferred
        winner = r["first"] if r["prob_first"] >= 0.5 else r["second"]
        assert p["chosen"][0]["content"] == winner and p["ai_prob"] >= 0.5

    summary = feedback.run(load_config(feedback.FeedbackConfig, None, [
        *base, "model.path=tiny:llama", f"data.train={user_files['prompts']}", "generation.max_new_tokens=6",
        "min_confidence=0.49", f"out={tmp_path / 'sampled'}"]))
    assert summary["comparisons"] == 8
    assert summary["preferences"] + summary["below_confidence"] + summary["identical_pairs"] == 8


def test_feedback_needs_exactly_one_source(tmp_path, user_files):
    with pytest.raises(DataError, match="exactly one"):
        feedback.run(load_config(feedback.FeedbackConfig, None, ["judge.path=tiny:llama", f"out={tmp_path / 'x'}"]))


@pytest.fixture()
def peaky_teacher(tmp_path):
    """A tiny model with sharpened output logits: a teacher far from the random student."""
    from tether.models.loading import save_model

    model, tok = load_model_and_tokenizer(ModelConfig(path="tiny:llama"))
    with torch.no_grad():
        torch.manual_seed(1)
        model.get_output_embeddings().weight.normal_(0, 1.0)
    return str(save_model(model, tok, tmp_path / "teacher"))


@pytest.mark.parametrize("loss", ["kl", "sft"])
def test_distillation_moves_the_bare_student_towards_the_prompted_teacher(tmp_path, user_files, peaky_teacher, loss):
    out = tmp_path / loss
    cfg = load_config(distill.DistillConfig, None, [
        "model.path=tiny:llama", f"teacher.path={peaky_teacher}", f"data.train={user_files['prompts']}",
        "context.texts=[Answer as a pirate.]", "samples_per_prompt=2", "generation.max_new_tokens=12",
        f"loss={loss}", "loop.max_steps=30", "loop.batch_size=16", "loop.log_every=1", "optim.lr=1e-2", f"out={out}"])
    summary = distill.run(cfg)
    samples = _rows(out / "samples.jsonl")
    assert len(samples) == 16 and all(s["context"] == "Answer as a pirate." for s in samples)
    assert all("pirate" not in json.dumps(s["prompt"]) for s in samples)  # the student's prompt has no context
    losses = [m["loss"] for m in _rows(out / "metrics.jsonl")]
    assert summary["steps"] == 30 and losses[-1] < 0.5 * losses[0], losses
    assert (out / "model" / "model.safetensors").is_file() and len(_rows(out / "sft.jsonl")) == 16


def test_distillation_teacher_defaults_to_the_frozen_start_or_the_adapters_off(tmp_path, user_files):
    base = ["model.path=tiny:llama", f"data.train={user_files['prompts']}", "context.texts=[Be brief.]",
            "generation.max_new_tokens=6", "loop.max_steps=2", "loop.batch_size=8", "loop.log_every=1"]
    summary = distill.run(load_config(distill.DistillConfig, None, [*base, f"out={tmp_path / 'copy'}"]))
    assert summary["steps"] == 2 and summary["train_loss"] > 0  # the context changes the start's distribution
    summary = distill.run(load_config(distill.DistillConfig, None, [
        *base, "model.lora={r: 4, alpha: 8}", f"out={tmp_path / 'lora'}"]))
    assert summary["steps"] == 2 and summary["train_loss"] > 0
