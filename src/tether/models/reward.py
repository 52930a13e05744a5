"""Reward and value models: a causal-LM backbone with a scalar head.

They are ordinary HF ``AutoModelForSequenceClassification`` directories with
``num_labels=1``, so any tool loads them. The score of a sequence is the head's output at
its last non-padding token (transformers' convention, which needs ``pad_token_id`` in the
config; left and right padding both work).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tether.core.errors import UserError
from tether.losses.reward import EnsembleScores, ensemble_scores

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tether.models.loading import ModelConfig


def load_reward_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, *, num_labels: int = 1) -> PreTrainedModel:
    """A score-head model from ``cfg.path``: a saved reward model, or a causal LM whose head is new.

    ``num_labels`` > 1 gives several score heads on one backbone (a multi-head ensemble).

    Loading a causal LM checkpoint keeps its backbone weights and initialises the score
    head (transformers reports the head as newly initialised); that is how reward models
    start from the policy's base.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tether.models.loading import enable_checkpointing, resolve_device, resolve_dtype, resolve_model_path

    cfg = cfg.model_copy(update={"path": resolve_model_path(cfg.path)})
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    from tether.models.score_head import has_score_head, register_score_head

    if cfg.path.startswith("tiny:"):
        from tether.models.tiny import tiny_config

        config = tiny_config(cfg.path.removeprefix("tiny:"), tokenizer, num_labels=num_labels)
        if not has_score_head(config):  # no class in transformers: tether's generic head over the backbone
            register_score_head(type(config))
        model = AutoModelForSequenceClassification.from_config(config).to(dtype)
    else:
        try:
            config = AutoConfig.from_pretrained(cfg.path, num_labels=num_labels,
                                                trust_remote_code=cfg.trust_remote_code)
            config.pad_token_id = tokenizer.pad_token_id
            if not has_score_head(config):
                register_score_head(type(config))
            model = AutoModelForSequenceClassification.from_pretrained(
                cfg.path, config=config, dtype=dtype, trust_remote_code=cfg.trust_remote_code
            )
        except ValueError as exc:
            raise UserError(f"{cfg.path}: cannot build a sequence-classification head for this architecture "
                            f"({str(exc).splitlines()[0]})") from None
        except OSError as exc:
            raise UserError(f"cannot load a model from {cfg.path!r}: {str(exc).splitlines()[0]}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    model = model.to(device)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if cfg.lora is not None:
        from tether.models.lora import apply_lora

        model = apply_lora(model, cfg.lora, scalar_head=True)
    return model


def head_scores(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Every score head's score of each sequence (at its last real token).  (B, T), (B, T) -> (B, K)"""
    from tether.models.logprobs import position_ids_from_mask

    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask))
    return out.logits.to(torch.float32)


def grouped_head_scores(model: Any, batches: Sequence[Any]) -> list[Tensor]:
    """Scores of several batches (padded, or one packed row with ``position_ids``) in one forward of
    ``model``'s wrapper.  -> [(b, K), ...]"""
    from tether.models.logprobs import run_inside

    return run_inside(model, _grouped_scores, batches=batches)  # type: ignore[no-any-return]


def _grouped_scores(model: Any, *, batches: Sequence[Any]) -> list[Tensor]:
    return [_packed_head_scores(model, input_ids=b.input_ids, position_ids=b.position_ids)
            if b.position_ids is not None else head_scores(model, b.input_ids, b.attention_mask) for b in batches]


def packed_head_scores(model: PreTrainedModel, input_ids: Tensor, position_ids: Tensor) -> Tensor:
    """Scores of packed documents (one row, positions restarting at 0), at each document's last token.

    (1, N), (1, N) -> (D, K). The backbone runs once over the row with attention isolated per
    document (no 2-D mask: transformers derives it from the positions); the score head sees
    only the D last hidden states. Run it inside the training wrapper's forward
    (``tether.models.logprobs.run_inside``).
    """
    from tether.models.logprobs import run_inside

    return run_inside(model, _packed_head_scores, input_ids=input_ids, position_ids=position_ids)  # type: ignore[no-any-return]


def _packed_head_scores(model: Any, *, input_ids: Tensor, position_ids: Tensor) -> Tensor:
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(lm, lm.base_model_prefix)
    hidden = backbone(input_ids=input_ids, position_ids=position_ids, attention_mask=None,
                      use_cache=False).last_hidden_state[0]  # (N, H)
    starts = (position_ids[0] == 0).nonzero().squeeze(-1)
    last = torch.cat([starts[1:] - 1, starts.new_tensor([position_ids.shape[1] - 1])])
    if not hasattr(lm, "score"):
        raise UserError(f"{type(lm).__name__} has no 'score' head: padding-free scoring needs one (use packing: none)")
    return lm.score(hidden[last]).to(torch.float32)  # type: ignore[no-any-return]


def sequence_scores(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """One scalar per sequence (a single-head model).  (B, T), (B, T) -> (B,)"""
    return head_scores(model, input_ids, attention_mask).squeeze(-1)


class RewardEnsemble:
    """Score (prompt, completion) pairs with saved reward models; every head of every model is a member.

    ``score`` gives the members' mean, min and disagreement (std) per pair
    (:class:`tether.losses.reward.EnsembleScores`): the signals RL uses to resist reward hacking
    (optimise the min, or mean - k·std; watch disagreement rise).
    """

    def __init__(self, paths: Sequence[str | Path], *, device: str = "auto", batch_size: int = 32,
                 max_length: int = 1024) -> None:
        from transformers import AutoModelForSequenceClassification

        from tether.models.loading import load_tokenizer, resolve_device, resolve_model_path

        if not paths:
            raise UserError("a reward ensemble needs at least one model directory")
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(str(paths[0]))
        self.models = []
        for path in paths:
            try:
                model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(str(path)))
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot load a reward model from {str(path)!r}: {str(exc).splitlines()[0]}") from None
            model.config.pad_token_id = self.tokenizer.pad_token_id
            self.models.append(model.to(self.device).eval())
        self.batch_size, self.max_length = batch_size, max_length

    @classmethod
    def from_run(cls, run_dir: str | Path, **kwargs: Any) -> RewardEnsemble:
        """The models a ``tether train rm`` run wrote: ``member-*/model`` if it trained several, else ``model``."""
        run_dir = Path(run_dir)
        members = sorted(run_dir.glob("member-*/model"))
        return cls(members or [run_dir / "model"], **kwargs)

    @torch.no_grad()
    def member_scores(self, prompts: Sequence[Any], completions: Sequence[Any]) -> Tensor:
        """Every member's score of every pair.  -> (members, N)"""
        from tether.data.collate import collate_grouped, truncate
        from tether.models.chat import tokenize_prompt_completion

        sequences = [truncate(tokenize_prompt_completion(self.tokenizer, p, c), self.max_length)
                     for p, c in zip(prompts, completions, strict=True)]
        columns = []
        for start in range(0, len(sequences), self.batch_size):
            grouped = collate_grouped(sequences[start:start + self.batch_size], pad_id=self.tokenizer.pad_token_id,
                                      device=self.device, groups=4)
            per_model = [grouped.restore(torch.cat(grouped_head_scores(m, grouped.batches))) for m in self.models]
            columns.append(torch.cat(per_model, dim=-1).T.cpu())  # (members, b)
        return torch.cat(columns, dim=-1)

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> EnsembleScores:
        """Mean, min and disagreement of the members, per pair."""
        return ensemble_scores(self.member_scores(prompts, completions))


def token_values(model: Any, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """A value model's estimate at every position: its (first) score head on each hidden state.  -> (B, T)

    ``values[:, t]`` is the value of the state after reading tokens 0..t; PPO pairs token t+1's
    log-prob with ``values[:, t]`` (the value of the state it was sampled from).
    """
    from tether.models.logprobs import position_ids_from_mask

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(lm, lm.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_from_mask(attention_mask), use_cache=False).last_hidden_state
    return lm.score(hidden)[..., 0].float()  # type: ignore[no-any-return]
