"""`tether train irl` on a tiny model: its gamma = 0, no-regulariser case trains exactly as SFT does, a
discounted run learns, the recovered reward is scored on preference pairs, and packing is refused."""

import json

import pytest
import torch
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
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


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
    rewards = irl.recovered_rewards(tiny_llama, tokenizer, prompts, ["2.", "2. It is two."], gamma=0.0)
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
