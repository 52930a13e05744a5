"""`tether train irl` on a tiny model: IQ-Learn's gamma = 0, no-regulariser case trains exactly as SFT does,
a discounted run learns, the recovered reward is scored on preference pairs, and packing is refused; IRFT
runs its rounds (each sampling from the previous round's model, each a DPO run whose reference is that
model), and its recovered reward is β times the final model's log-ratio to the first round's start."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tether.core.config import load_config
from tether.core.errors import ConfigError
from tether.train import irl, sft

COMMON = ["model.path=tiny:llama", "data.train=builtin:arithmetic-chat", "data.max_length=48", "optim.lr=3e-3",
          "loop.batch_size=8", "loop.max_steps=4", "seed=1"]


def _metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_without_discount_or_regulariser_it_trains_exactly_as_sft(tmp_path):
    sft.run(load_config(sft.SFTConfig, None, [*COMMON, f"out={tmp_path / 'sft'}"]))
    irl.run(load_config(irl.IRLConfig, None, [*COMMON, "gamma=0", "alpha=null", f"out={tmp_path / 'irl'}"]))
    assert [m["loss"] for m in _metrics(tmp_path / "irl")] == pytest.approx(
        [m["loss"] for m in _metrics(tmp_path / "sft")], rel=1e-5)
    a, b = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("sft", "irl"))
    # Float rounding only: the two losses sum the same terms in another order, and Adam's normalised steps
    # carry a 1e-7 gradient difference into weights at about 1e-6 (seen on some hosts); a different objective
    # would move them by the order of lr (3e-3) per step.
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_a_discounted_run_learns_and_scores_pairs_with_its_recovered_reward(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {a} + 11?"}],
                                         "chosen": f"{a} + 11 = {a + 11}.", "rejected": f"{a} + 11 = {a + 12}."})
                             + "\n" for a in range(10, 30)))
    summary = irl.run(load_config(irl.IRLConfig, None, [*COMMON, "loop.max_steps=30", "optim.warmup_steps=3",
                                                        f"pairs={pairs}", f"out={tmp_path / 'irl'}"]))
    losses = [m["loss"] for m in _metrics(tmp_path / "irl")]
    assert losses[-1] < losses[0]
    accuracy = summary["pair_accuracy"]
    assert accuracy["n"] == 20 and 0 <= accuracy["value"] <= 1


def test_recovered_rewards_add_up_each_replys_token_rewards(tokenizer, tiny_llama):
    prompts = [[{"role": "user", "content": "What is 1 + 1?"}]] * 2
    rewards = irl.soft_q_rewards(tiny_llama, tokenizer, prompts, ["2.", "2. It is two."], gamma=0.0)
    # γ = 0: each token's reward is its logit; a reply's is their sum, so the longer reply adds its extra tokens'.
    from tether.models.chat import tokenize_prompt_completion

    example = tokenize_prompt_completion(tokenizer, prompts[0], "2.")
    ids = torch.tensor([example.input_ids])
    with torch.no_grad():
        logits = tiny_llama(input_ids=ids).logits[0, :-1]
    mask = torch.tensor(example.loss_mask[1:])
    expected = logits[mask].gather(1, ids[0, 1:][mask][:, None]).sum()
    assert rewards[0] == pytest.approx(float(expected), abs=1e-4)
    assert rewards[0] != rewards[1]


def test_packing_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="packing"):
        irl.run(load_config(irl.IRLConfig, None, [*COMMON, "data.packing=padding-free", f"out={tmp_path / 'p'}"]))


def test_irft_runs_its_rounds_against_the_policys_own_samples(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {a} + 11?"}],
                                         "chosen": f"{a} + 11 = {a + 11}.", "rejected": f"{a} + 11 = {a + 12}."})
                             + "\n" for a in range(10, 20)))
    out = tmp_path / "irft"
    summary = irl.run(load_config(irl.IRLConfig, None, [
        *COMMON, "method=irft", "irft.rounds=2", "loop.max_steps=3", "irft.sampling.max_new_tokens=8",
        f"pairs={pairs}", f"out={out}"]))
    rounds = summary["rounds"]
    assert [r["steps"] for r in rounds] == [2, 1]
    assert rounds[0]["start"] == "tiny:llama" and rounds[1]["start"] == str(out / "round-0" / "model")
    for r in rounds:
        rows = [json.loads(x) for x in (out / f"round-{r['round']}" / "pairs.jsonl").read_text().splitlines()]
        assert len(rows) == r["pairs"] == r["steps"] * 8
        # The demonstration is chosen; the rejected reply is the round's own sample, not a demonstration.
        assert all(row["prompt"][-1]["role"] == "user" and row["chosen"].strip() for row in rows)
        dpo = yaml.safe_load((out / f"round-{r['round']}" / "config.yaml").read_text())
        assert dpo["model"]["path"] == r["start"] and dpo["reference"]["precompute"]
    final = load_file(str(out / "model" / "model.safetensors"))
    last = load_file(str(out / "round-1" / "model" / "model.safetensors"))
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert summary["pair_accuracy"]["n"] == 10

    # The recovered reward: β (log π_final − log π_start), read back from the run directory.
    reward = irl.RecoveredReward(out)
    prompts = [[{"role": "user", "content": "What is 3 + 4?"}]] * 2
    replies = ["3 + 4 = 7.", "3 + 4 = 8."]
    expected = [0.1 * (a - b) for a, b in zip(irl.reply_logps(reward.model, reward.tokenizer, prompts, replies),
                                                irl.reply_logps(reward.reference, reward.tokenizer, prompts, replies),
                                                strict=True)]
    assert reward(prompts, replies) == pytest.approx(expected)
    assert any(abs(x) > 1e-6 for x in expected)  # training moved the policy off its start
