"""How an edit is judged: by what the model generates, not only by which completion it prefers.

Prompts are continued greedily: the rewrite prompt and the neighbours for the target's length plus ``slack``
tokens, each paraphrase for ``paraphrase_tokens`` (an answer in chat may restate the question first):

- **efficacy**: the rewrite prompt's continuation starts with the target;
- **paraphrase**: each paraphrase's continuation names the target (as a whole word);
- **neighbourhood**: each neighbour's first tokens (as many as the target has, plus one) are what the
  *original* model said, computed before any edit (so locality is never measured against an already-edited
  model); ``kept_whole`` asks the same of the whole continuation. A neighbour that is itself the rewrite
  prompt of an edit made (sequential runs: another request's fact) is marked ``edited`` and left out: its
  continuation is meant to change;
- **probability** (with ``target_true``): log P(target) > log P(target_true) after the rewrite prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence, Set
from typing import Any

import torch

from tether.edit.model import _pad_id
from tether.edit.requests import EditRequest
from tether.models.chat import encode_text


def continuations(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, *,
                  batch_size: int = 32) -> list[str]:
    """Greedy continuations of ``prompts`` (text after the prompt, special tokens dropped)."""
    return [tokenizer.decode(ids, skip_special_tokens=True)
            for ids in continuation_ids(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size)]


def continuation_ids(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, *,
                     batch_size: int = 32) -> list[list[int]]:
    """Greedy continuations of ``prompts`` as token ids (up to and including an end-of-sequence token), each
    prompt encoded as the rows the edit is computed on are (:func:`tether.models.chat.encode_text`: one BOS,
    where the tokenizer adds one)."""
    out: list[list[int]] = []
    pad = _pad_id(tokenizer)
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        chunk = [encode_text(tokenizer, p) for p in prompts[start: start + batch_size]]
        width = max(len(ids) for ids in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):  # left padding: every row ends where generation starts
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        with torch.no_grad():
            generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=pad)
        out.extend(_until_end(row[width:], tokenizer.eos_token_id) for row in generated.tolist())
    return out


def _until_end(ids: list[int], eos: int | None) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos is not None and eos in ids else ids


def starts_with(text: str, target: str) -> bool:
    """Whether ``text`` opens with ``target`` (surrounding whitespace ignored)."""
    return text.strip().startswith(target.strip())


def names(text: str, target: str) -> bool:
    """Whether ``target`` occurs in ``text`` as a whole word (or phrase)."""
    return re.search(rf"(?<!\w){re.escape(target.strip())}(?!\w)", text) is not None


def budget(tokenizer: Any, request: EditRequest, slack: int) -> int:
    """Tokens to generate for ``request``: the target's length plus ``slack``."""
    return len(encode_text(tokenizer, request.target, special=False)) + slack


def reference(model: Any, tokenizer: Any, requests: Sequence[EditRequest], slack: int) -> list[list[list[int]]]:
    """The original model's continuation (token ids) of every request's neighbours: what locality compares
    against."""
    return [continuation_ids(model, tokenizer, r.neighbours, budget(tokenizer, r, slack)) if r.neighbours else []
            for r in requests]


def kept(now: Sequence[int], expected: Sequence[int], span: int) -> bool:
    """Whether the first ``span`` tokens of a neighbour's continuation are the original's."""
    return list(now[:span]) == list(expected[:span])


def judge(model: Any, tokenizer: Any, request: EditRequest, expected: Sequence[Sequence[int]], slack: int,
          paraphrase_tokens: int, edited: Set[str] = frozenset()) -> dict[str, Any]:
    """One request's scores on the model as it is now (see the module docstring); ``edited``: the rewrite
    prompts of every edit made."""
    from tether.models.logprobs import continuation_logps

    n = budget(tokenizer, request, slack)
    span = budget(tokenizer, request, 1)
    rewrite = request.prompt.format(request.subject)
    said, *neighbours = continuation_ids(model, tokenizer, [rewrite, *request.neighbours], n)
    para = continuations(model, tokenizer, request.paraphrases, paraphrase_tokens) if request.paraphrases else []
    text = tokenizer.decode(said, skip_special_tokens=True)

    def decoded(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    result: dict[str, Any] = {
        "rewrite": {"continuation": text, "success": starts_with(text, request.target)},
        "paraphrases": [{"prompt": p, "continuation": c, "success": names(c, request.target)}
                        for p, c in zip(request.paraphrases, para, strict=True)],
        "neighbours": [{"prompt": p, "expected": decoded(e), "continuation": decoded(c), "kept": kept(c, e, span),
                        "kept_whole": list(c) == list(e), "edited": p in edited,
                        "names_target": names(decoded(c), request.target) and not names(decoded(e), request.target)}
                       for p, e, c in zip(request.neighbours, expected, neighbours, strict=True)],
    }
    if request.target_true is not None:
        new, old = continuation_logps(model, tokenizer, [rewrite, rewrite], [request.target, request.target_true],
                                      special=True)
        result["probability"] = {"new": round(new, 4), "old": round(old, 4), "success": new > old}
    return result


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rates over requests with 95% intervals: efficacy and probability (Wilson), paraphrase and neighbourhood
    (bootstrap over requests, each request's prompts one cluster)."""
    from tether.core.stats import bootstrap_mean, wilson_interval

    out: dict[str, Any] = {"requests": len(results)}
    out["efficacy"] = wilson_interval(sum(r["rewrite"]["success"] for r in results), len(results)).as_dict()
    para = [[float(p["success"]) for p in r["paraphrases"]] for r in results if r["paraphrases"]]
    if para:
        out["paraphrase"] = bootstrap_mean(para).as_dict()
    def neighbours(key: str) -> list[list[float]]:
        values = [[float(x[key]) for x in r["neighbours"] if not x.get("edited")] for r in results]
        return [v for v in values if v]

    if neighbours("kept"):
        out["neighbourhood"] = bootstrap_mean(neighbours("kept")).as_dict()
        out["neighbourhood_whole"] = bootstrap_mean(neighbours("kept_whole")).as_dict()
        out["neighbour_names_target"] = bootstrap_mean(neighbours("names_target")).as_dict()
    probs = [r["probability"]["success"] for r in results if "probability" in r]
    if probs:
        out["probability"] = wilson_interval(sum(probs), len(probs)).as_dict()
    return out
