"""What tether's guards cost per check, and how well its personal-data guard finds what it should.

A procedurally generated corpus of ~512-token texts (filler prose with emails, phone numbers, payment
card numbers and AWS keys put in, and look-alikes that are none of them: order numbers that fail the
Luhn check, dates, versions, prices), every inserted item recorded. Each guard checks every text once,
timed; the ``pii`` guard's findings are scored against the inserted items per kind. With ``--scrubadub
PYTHON`` (an interpreter with ``pip install scrubadub`` in its own environment, the pure-Python PII
cleaner a user would pick instead) the same texts go through ``scrubadub.Scrubber().iter_filth`` in that
interpreter, timed the same way and scored the same way.

    python bench/guards.py --texts 500 --scrubadub /path/to/venv/bin/python --json docs/results/bench/guards_cpu.json
    python bench/guards.py --texts 20                                   # tether only
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import emit

WORDS = ("the report covers our quarterly results and the plans for next year while the team reviews each "
         "account and writes a short summary for the board before the meeting on friday afternoon").split()
KINDS = ("email", "phone", "card", "aws_key")


def _luhn_digit(body: str) -> str:
    total = 0
    for i, char in enumerate(reversed(body)):
        digit = int(char)
        if i % 2 == 0:  # these are doubled once the check digit is appended
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return str((10 - total % 10) % 10)


def _item(kind: str, rng: random.Random) -> str:
    if kind == "email":
        user, domain = rng.choice(["ana", "li.wei", "j_smith", "ops"]), rng.choice(["example", "corp"])
        return f"{user}{rng.randint(1, 99)}@{domain}.com"
    if kind == "phone":
        return rng.choice([f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                           f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                           f"{rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"])
    if kind == "card":
        body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
        number = body + _luhn_digit(body)
        return rng.choice([" ", "-"]).join(number[i:i + 4] for i in range(0, 16, 4))
    return "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))


def _decoy(rng: random.Random) -> str:
    while True:  # a 16-digit order number that fails the Luhn check
        body = "".join(str(rng.randint(0, 9)) for _ in range(16))
        if _luhn_digit(body[:-1]) != body[-1]:
            break
    return rng.choice([f"order {body}", f"on 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                       f"version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
                       f"for ${rng.randint(10, 9999)}.{rng.randint(0, 99):02d}"])


def corpus(n: int, seed: int = 0) -> list[dict[str, object]]:
    """``n`` texts of ~2,000 characters (~512 tokens) with their inserted items (kind, text)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts, items = [], []
        while sum(len(p) + 1 for p in parts) < 2000:
            roll = rng.random()
            if roll < 0.04:
                kind = rng.choice(KINDS)
                value = _item(kind, rng)
                items.append((kind, value))
                parts.append(value)
            elif roll < 0.07:
                parts.append(_decoy(rng))
            else:
                parts.append(rng.choice(WORDS))
        texts.append({"text": " ".join(parts), "items": items})
    return texts


SCRUBADUB = """
import json, sys, time
import scrubadub
scrubber = scrubadub.Scrubber()
texts = json.load(open(sys.argv[1]))
out = []
for text in texts:
    start = time.perf_counter()
    found = [(f.type, f.text) for f in scrubber.iter_filth(text)]
    out.append({"seconds": time.perf_counter() - start, "found": found})
json.dump(out, open(sys.argv[2], "w"))
"""
# scrubadub's names for the kinds compared here.
SCRUBADUB_KINDS = {"email": "email", "phone": "phone", "credit_card": "card"}


def _score(found: list[list[tuple[str, str]]], texts: list[dict[str, object]], kinds: tuple[str, ...]
           ) -> dict[str, dict[str, float]]:
    """Recall and precision per kind: an inserted item counts as found when a finding of its kind holds its text."""
    out = {}
    for kind in kinds:
        gold = sum(1 for t in texts for k, _ in t["items"] if k == kind)  # type: ignore[attr-defined]
        hits = flagged = correct = 0
        for text, findings in zip(texts, found, strict=True):
            values = [v for k, v in text["items"] if k == kind]  # type: ignore[attr-defined]
            mine = [v for k, v in findings if k == kind]
            flagged += len(mine)
            correct += sum(1 for v in mine if any(v.strip() in g or g in v for g in values))
            hits += sum(1 for g in values if any(g in v or v.strip() in g for v in mine))
        out[kind] = {"gold": gold, "recall": round(hits / max(gold, 1), 4),
                     "precision": round(correct / max(flagged, 1), 4), "flagged": flagged}
    return out


def _timing(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": round(1000 * statistics.median(ordered), 3),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)}


def main() -> None:
    """Time every guard on the corpus, score the pii guard (and scrubadub, if given)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=500, help="texts in the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scrubadub", default=None, help="a python with scrubadub installed (its own environment)")
    parser.add_argument("--json", type=Path, help="also write the results here, with the machine and command")
    args = parser.parse_args()

    from tether.guard.patterns import RegexGuardConfig
    from tether.guard.pii import PiiGuardConfig, find_pii
    from tether.guard.refusal import RefusalGuardConfig

    texts = corpus(args.texts, args.seed)
    guards = {"pii": PiiGuardConfig(on_output="cut").build(),
              "regex": RegexGuardConfig(output=[r"SECRET-\d{4}", r"internal use only", r"\bpassword\s*[:=]"]).build(),
              "refusal (learned)": RefusalGuardConfig().build()}
    mean_chars = round(statistics.mean(len(t["text"]) for t in texts))  # type: ignore[arg-type]
    result: dict[str, object] = {"texts": len(texts), "mean_chars": mean_chars,
                                 "inserted": {k: sum(1 for t in texts for kk, _ in t["items"] if kk == k)
                                              for k in KINDS}}
    timings = {}
    for name, guard in guards.items():
        guard.check_output(texts[0]["text"])  # first-call work (the detector's load) off the clock
        seconds = []
        for text in texts:
            start = time.perf_counter()
            guard.check_output(text["text"])  # type: ignore[arg-type]
            seconds.append(time.perf_counter() - start)
        timings[name] = _timing(seconds)
    result["tether_seconds_per_check"] = timings
    tether_found = [[(f.kind, t["text"][f.start:f.end]) for f in find_pii(t["text"])] for t in texts]  # type: ignore[index]
    result["tether_pii"] = _score(tether_found, texts, KINDS)
    if args.scrubadub:
        with tempfile.TemporaryDirectory() as tmp:
            source, found_at, script = Path(tmp) / "texts.json", Path(tmp) / "found.json", Path(tmp) / "run.py"
            source.write_text(json.dumps([t["text"] for t in texts]))
            script.write_text(SCRUBADUB)
            subprocess.run([args.scrubadub, str(script), str(source), str(found_at)], check=True)
            runs = json.loads(found_at.read_text())
        found = [[(SCRUBADUB_KINDS.get(k, k), v) for k, v in run["found"]] for run in runs]
        result["scrubadub_seconds_per_check"] = _timing([run["seconds"] for run in runs])
        result["scrubadub_pii"] = _score(found, texts, ("email", "phone", "card"))
        result["pii_p50_speedup_over_scrubadub"] = round(
            result["scrubadub_seconds_per_check"]["p50_ms"] / max(timings["pii"]["p50_ms"], 1e-9), 1)  # type: ignore[index]
    emit(result, args.json)


if __name__ == "__main__":
    main()
