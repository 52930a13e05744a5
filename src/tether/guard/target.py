"""A model behind guards, as a target like any other: ``tether eval`` and ``tether redteam`` measure a guarded
model exactly as they measure a bare one (``guards: FILE`` in their configs).

A request an input guard blocks gets the refusal text without reaching the model; a reply an output guard
objects to is refused whole, cut at the offending span, or redacted, as the gateway does. Every prompt's
verdicts are kept (``records``) so a report can say how often each guard acted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.data.records import Prompt
from tether.guard.base import Guard, Verdict
from tether.models.generation import Completion, GenerationSettings, Generator

REFUSAL = "I can't help with that request."


class GuardedGenerator:
    """``inner`` behind ``guards`` (see the module). Anything else asked of it is asked of ``inner`` (a white-box
    attack such as GCG optimises against the model; its prompts still pass the guards)."""

    def __init__(self, inner: Generator, guards: Sequence[Guard], *, refusal: str = REFUSAL) -> None:
        self.inner, self.guards, self.refusal = inner, [g for g in guards if not g.shadow], refusal
        self.records: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[Completion]:
        """Each prompt through the input guards, the model, and the output guards."""
        out: list[Completion | None] = [None] * len(prompts)
        records: list[dict[str, Any]] = [{} for _ in prompts]
        sent: list[tuple[int, Prompt]] = []
        for i, prompt in enumerate(prompts):
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            for guard in self.guards:
                verdict = guard.check_input(messages)
                if verdict.allowed:
                    continue
                if verdict.action == "redact" and isinstance(verdict.replacement, list):
                    messages = verdict.replacement
                    records[i].setdefault("redacted", []).append(guard.name)
                    continue
                records[i]["input"] = _brief(verdict)
                out[i] = Completion(self.refusal, [], finish_reason="stop")
                break
            else:
                sent.append((i, prompt if isinstance(prompt, str) and not records[i] else messages))
        completions = self.inner.generate([p for _, p in sent], settings) if sent else []
        for (i, _), completion in zip(sent, completions, strict=True):
            out[i] = self._check_output(completion, records[i])
        self.records += records
        return [c for c in out if c is not None]

    def _check_output(self, completion: Completion, record: dict[str, Any]) -> Completion:
        text = completion.text
        for guard in self.guards:
            verdict = guard.check_output(text)
            if verdict.allowed:
                continue
            record["output"] = _brief(verdict)
            if verdict.action == "redact" and isinstance(verdict.replacement, str):
                text = verdict.replacement
                continue
            if verdict.action == "cut" and verdict.span is not None:
                return Completion(text[:verdict.span[0]], [], finish_reason="stop")
            return Completion(self.refusal, [], finish_reason="stop")
        if text == completion.text:
            return completion
        return Completion(text, [], finish_reason=completion.finish_reason)


def _brief(verdict: Verdict) -> dict[str, Any]:
    return {"guard": verdict.guard, "action": verdict.action, "categories": list(verdict.categories)}


def guarded(inner: Generator, guards_file: str | None) -> Generator:
    """``inner`` behind the guards of ``guards_file`` (``inner`` itself when there is none)."""
    if not guards_file:
        return inner
    from tether.guard.base import load_guards

    return GuardedGenerator(inner, load_guards(guards_file))
