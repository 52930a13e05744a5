"""What a person reads of an oversight run: the transcripts as a self-contained page, and per-question scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def per_question(transcripts: Sequence[Any]) -> dict[str, list[float]]:
    """Each question's judge scores (consultancy: one per assigned option), by question id, in order."""
    scores: dict[str, list[float]] = {}
    for t in transcripts:
        scores.setdefault(t.question.id, []).append(t.score)
    return scores


def transcripts_page(runs: Mapping[str, Sequence[Any]], *, per_run: int = 20) -> str:
    """A self-contained page: the first ``per_run`` transcripts of every run, quotes marked verified or not,
    the source beside them and the judge's verdict against the truth."""
    from tether.core.html import escape, page
    from tether.oversight.protocols import LABELS

    body = ["<p class='meta'>Verified quotes are green, unverified red; the judge saw neither the source nor "
            "the true answer.</p>"]
    for name, transcripts in runs.items():
        body.append(f"<h2>{escape(name)}</h2>")
        for t in transcripts[:per_run]:
            q = t.question
            opts = ", ".join(f"{LABELS[i]}: {escape(o)}" + (" (true)" if i == q.answer else "")
                             for i, o in enumerate(q.options))
            turns = []
            for turn in t.turns:
                text = escape(turn.text)
                for c in turn.quotes:
                    cls = "good" if c.verified else "bad"
                    text = text.replace(escape(f"<quote>{c.quote}</quote>"),
                                        f"<span class='{cls}'>&ldquo;{escape(c.quote)}&rdquo;</span>", 1)
                turns.append(f"<li><b>{escape(turn.speaker)}</b> for {LABELS[turn.side]}"
                             f" (best of {turn.candidates}): {text}</li>")
            verdict = "tie" if t.verdict is None else LABELS[t.verdict]
            judged = ("no answer known" if t.score is None else "right" if t.score == 1 else
                      "wrong" if t.score == 0 else "tied")
            body.append(f"<div class='card transcript'><p><b>{escape(q.question)}</b> {opts}</p>"
                        f"<ul>{''.join(turns)}</ul><p>Judge: {verdict} "
                        f"({', '.join(f'{p:.2f}' for p in t.probs)}), <span class="
                        f"'{'good' if t.score == 1 else 'bad'}'>{judged}</span></p>"
                        f"<pre>{escape(q.source)}</pre></div>")
    return page("Oversight protocols: transcripts", body)
