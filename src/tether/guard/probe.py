"""A linear probe as a guard: the model's own activations, read where it starts to answer, scored.

The guard loads a model (the one being served, or any with the probe's site and width) and a probe that
``tether interp probe`` (or an experiment) fitted. For each request it renders the conversation with the
model's chat template, reads the probe's site at the last prompt token — the place the model decides how
to begin — and scores it. A score at or above ``threshold`` flags the request: blocked in ``enforce`` mode,
held for a person in ``escalate``, only recorded in ``shadow``. Either way the score is in the verdict, so
the audit trail and the monitor (a ``guard:NAME`` signal, and ``guard:NAME:flagged`` as a rate) read it:
a probe is a monitor signal by being a guard in shadow mode. Replies are not its business.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from tether.guard.base import GUARDS, Guard, GuardConfig, OnOutput, Verdict


@GUARDS.register("probe")
class ProbeGuardConfig(GuardConfig):
    """Flag requests whose activations a probe scores at or above a threshold."""

    kind: Literal["probe"] = "probe"
    model: str = Field(description="the model whose activations the probe reads (directory, hub id, world:base)")
    probe: str = Field(description="a probe file (tether interp probe writes one per kind)")
    threshold: float = Field(description="the score from which a request is flagged (tether interp probe reports "
                             "the one that lets through 1% of held-out negatives)")
    category: str = Field("probe", description="the category a flagged request is given")

    def build(self) -> Guard:
        """A :class:`ProbeGuard` (loads the model and the probe)."""
        return ProbeGuard(self)


class ProbeGuard:
    """The ``probe`` guard (see the module)."""

    on_output: OnOutput = "annotate"
    stream_window: int | None = 0

    def __init__(self, cfg: ProbeGuardConfig) -> None:
        from tether.core.errors import UserError
        from tether.interp.probes import Probe
        from tether.interp.sites import resolve
        from tether.models.loading import ModelConfig, load_model_and_tokenizer

        self.name, self.shadow = cfg.name or "probe", cfg.mode == "shadow"
        self.escalate = cfg.mode == "escalate"
        self.cfg = cfg
        try:
            self.probe = Probe.load(cfg.probe)
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{cfg.probe}: not a probe file ({exc})") from None
        self.model, self.tokenizer = load_model_and_tokenizer(ModelConfig(path=cfg.model))
        self.model.eval()
        try:
            resolve(self.model, self.probe.site)
        except ValueError as exc:
            raise UserError(f"probe {cfg.probe} reads {self.probe.site}: {exc}") from None

    def score(self, conversations: Sequence[Sequence[dict[str, str]]]) -> list[float]:
        """The probe's score at the last prompt token of each conversation."""
        from tether.interp.capture import capture

        texts = [str(self.tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True))
                 for c in conversations]
        acts = capture(self.model, self.tokenizer, texts, [self.probe.site])[self.probe.site]
        return [float(s) for s in self.probe.scores(acts.numpy())]

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Flagged when the probe's score reaches the threshold."""
        start = time.perf_counter()
        value = self.score([messages])[0]
        flagged = value >= self.cfg.threshold
        return Verdict(not flagged, self.name, f"probe score {value:.3f}" if flagged else "",
                       categories=(self.cfg.category,) if flagged else (), score=value,
                       seconds=time.perf_counter() - start)

    def check_output(self, text: str) -> Verdict:
        """Replies are not its business: always allowed."""
        return Verdict(True, self.name)
