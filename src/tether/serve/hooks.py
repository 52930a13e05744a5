"""Guard hooks: where a guard stands between the client and the model.

A guard looks at the conversation before the model (``check_input``) and at the reply after it
(``check_output``); a verdict blocks, or cuts the reply at the first offending span. A reply that is not
streamed is checked whole before a byte of it is sent. A streamed reply is checked as it is produced
(:class:`OutputStream`): each time it grows, every guard checks the text so far, and only the text more
than the guards' ``stream_window`` characters behind its end is sent, so offending text up to that long
is cut before any of it reaches the client; at the end every guard checks the whole reply before the
rest is sent. ``stream: true`` therefore never skips a guard, and a guard that can only judge whole
replies (``stream_window`` None) makes the stream wait for the whole reply. What a client may have seen
of offending text is measured, not assumed: a verdict reached after part of its span was sent records
how many characters were (``exposed``), and the audit trail keeps it.

The guards themselves, their verdicts and their registry are :mod:`tether.guard`'s. A guard that redacts
makes the stream wait for the whole reply (a redaction rewrites the text around what it replaces); a
guard in shadow mode is run and recorded, never acted on.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.guard.base import Guard, Verdict


class OutputStream:
    """The output hook on a streamed reply (see the module): what of the reply so far may be sent now.

    ``holdback``: characters held back besides the guards' windows (the gateway holds back the longest stop
    string but one, which the model may be in the middle of writing).
    """

    def __init__(self, guards: Sequence[Guard], *, holdback: int = 0) -> None:
        self.guards = list(guards)
        windows = [g.stream_window for g in self.guards if not g.shadow]  # a shadow guard holds nothing back
        self.buffered = any(w is None for w in windows)  # some guard judges whole replies only
        self.window = max((w for w in windows if w is not None), default=0) + holdback
        self.sent = ""                       # what the client has been sent
        self.verdicts: list[Verdict] = []    # the final checks, and the verdict that ended the stream
        self.blocked: Verdict | None = None
        self.exposed = 0                     # characters of the offending span (or reply) sent before it was caught
        self.checks = 0                      # guard checks run on the stream
        self.diverged = False                # the final reply did not begin with what was sent

    def feed(self, text: str) -> str:
        """The reply so far in; the piece of it that may be sent now ('' for none)."""
        if self.blocked is not None:
            return ""
        blocked = self._check(text)
        if blocked is not None:
            return blocked
        if self.buffered:
            return ""
        end = len(text) - self.window
        if end <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece = text[len(self.sent):end]
        self.sent += piece
        return piece

    def finish(self, text: str) -> str:
        """The whole reply in, once every guard has checked all of it; the rest of it to send."""
        if self.blocked is not None:
            return ""
        for guard in self.guards:  # in order, each on the text the ones before it left (redactions compose)
            self.checks += 1
            verdict = guard.check_output(text)
            self.verdicts.append(verdict)
            if verdict.allowed or guard.shadow:
                continue
            if verdict.action == "redact" and isinstance(verdict.replacement, str):
                text = verdict.replacement  # a redacting guard buffers the stream: none of the original was sent
                continue
            return self._block(guard, verdict, text)
        if not text.startswith(self.sent):
            # The final text differs from what was streamed (a decoding that changed earlier text): the client
            # keeps what it has; nothing is sent that would not join onto it.
            self.diverged = True
            return ""
        piece = text[len(self.sent):]
        self.sent += piece
        return piece

    def _check(self, text: str) -> str | None:
        """Every guard on the text so far; the piece to send up to a block or a cut, or None."""
        for guard in self.guards:
            if guard.on_output == "annotate":
                continue  # it never changes a reply: it reads the whole one, once, at the end
            self.checks += 1
            verdict = guard.check_output(text)
            if not verdict.allowed and not guard.shadow and verdict.action in ("block", "cut"):
                return self._block(guard, verdict, text)
        return None

    def _block(self, guard: Guard, verdict: Verdict, text: str) -> str:
        self.blocked = verdict
        if verdict not in self.verdicts:
            self.verdicts.append(verdict)
        start, stop = verdict.span if verdict.span else (0, len(text))
        self.exposed = max(0, min(len(self.sent), stop) - start)
        cut = start if verdict.span and verdict.action == "cut" else 0
        piece = text[len(self.sent):cut] if cut > len(self.sent) and text.startswith(self.sent) else ""
        self.sent += piece
        return piece

