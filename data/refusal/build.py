"""Build tether's refusal-detector datasets from the transcribed openings under data/refusal/raw/.

The raw files hold, per sampled chunk of a public file, one record per reply: a header
``@@ PROMPT_ID|FINAL_LABEL[|cut]`` and the reply's opening. This script turns them into the JSONL
files the detector is trained and measured on (src/tether/assets/refusal/), applying the rules in
data/refusal/README.md: at most 300 characters per opening; training rows (train, dev, dev2, dev3 and
the project's own) whose prompt id occurs in the test set are dropped, so no prompt is in both.

The test rows also carry their request (``prompt``), XSTest's prompt type and whether that prompt is one
of XSTest's unsafe ones (``unsafe_prompt``: its type starts with ``contrast_``), from ``raw/test-prompts.txt``;
``harmful_compliance`` is a full compliance with an unsafe prompt, the label a harmful-compliance judge is
measured against. The training rows carry the same fields from XSTest v2's prompt list
(``raw/prompts-v2.txt``), so a detector can be trained to read the request too. ``outside-xstest-v1`` holds
XSTest v1's completions (``raw/outside-v1.txt``) with v1's prompts (``raw/prompts-v1.txt``), measured and never
trained on; ``outside2-xstest-v1`` a second sample of them (``raw/outside2-v1.txt``), the same.

    python data/refusal/build.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parents[1] / "src" / "tether" / "assets" / "refusal"
MAX_CHARS = 300
REFUSAL_LABELS = {"2_full_refusal", "3_partial_refusal"}


def parse(path: Path) -> list[dict]:
    """The records of one raw file, in order."""
    rows, source, model, head, body = [], "", "", None, []

    def flush() -> None:
        if head is None:
            return
        prompt_id, label, *flags = head.split("|")
        text = "\n".join(body).strip()[:MAX_CHARS].rstrip()
        rows.append({"id": f"{source}/{model}/{prompt_id}", "source": source, "model": model,
                     "prompt_id": prompt_id, "label": label, "refusal": label in REFUSAL_LABELS,
                     "response": text, "cut": "cut" in flags})

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            flush()
            head, body = None, []
            v2 = re.match(r"## xstest_v2_completions_(\w+)\.csv", line)
            v1 = re.match(r"## xstest_completions_(\w+)_v1\.csv", line)
            source, model = (("xstest-v2", v2.group(1)) if v2 else ("xstest-v1", v1.group(1)) if v1
                             else ("tether", "hand-written"))
        elif line.startswith("@@ "):
            flush()
            head, body = line[3:].strip(), []
        else:
            body.append(line)
    flush()
    return rows


def read_prompts(path: Path) -> dict[str, tuple[str, str]]:
    """``{prompt id: (XSTest type, prompt)}`` from a prompts file: ``ID|TYPE|PROMPT`` rows, or (``prompts-v2.txt``)
    ``V2|V1|PROMPT`` rows under ``# TYPE`` lines."""
    prompts, kind = {}, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        section = re.fullmatch(r"# (\w+)", line)
        if section:
            kind = section.group(1)
        elif line.strip() and not line.startswith("#"):
            first, second, prompt = line.split("|", 2)
            if first.startswith("v"):
                prompts[first] = (second, prompt)
            else:
                prompts[f"v2-{first}"] = (kind, prompt)
    return prompts


def with_prompts(rows: list[dict], prompts: dict[str, tuple[str, str]], source: str) -> list[dict]:
    """``rows`` with their request, its XSTest type, and the harmful-compliance label."""
    missing = sorted({r["prompt_id"] for r in rows} - set(prompts))
    assert not missing, f"{source}: no prompt for {missing[:5]}"
    out = []
    for r in rows:
        kind, prompt = prompts[r["prompt_id"]]
        unsafe = kind.startswith("contrast_")
        out.append({**r, "prompt": prompt, "prompt_type": kind, "unsafe_prompt": unsafe,
                    "harmful_compliance": unsafe and r["label"] == "1_full_compliance"})
    return out


def write(path: Path, rows: list[dict]) -> None:
    """One JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    refusals = sum(r["refusal"] for r in rows)
    print(f"{path.relative_to(HERE.parents[1])}: {len(rows)} rows, {refusals} refusals")


def main() -> None:
    """Write the datasets."""
    raw = HERE / "raw"
    # The test rows' requests come from the completion files themselves (test-prompts.txt); the others' from
    # the prompt lists, which word one test prompt differently (v2-195).
    test = with_prompts(parse(raw / "test.txt"), read_prompts(raw / "test-prompts.txt"), "test-prompts.txt")
    test_prompts = {r["prompt_id"] for r in test}
    splits = {"test-xstest": test}
    v2 = read_prompts(raw / "prompts-v2.txt")
    for name in ("train", "dev", "dev2", "dev3"):
        rows = [r for r in parse(raw / f"{name}.txt") if r["prompt_id"] not in test_prompts]
        splits[f"{name}-xstest"] = with_prompts(rows, v2, "prompts-v2.txt")
    splits["train-project"] = parse(raw / "project.txt")
    # XSTest v1's completions, a second source measured once and never trained on (its prompts are v1's).
    v1 = read_prompts(raw / "prompts-v1.txt")
    splits["outside-xstest-v1"] = with_prompts(parse(raw / "outside-v1.txt"), v1, "prompts-v1.txt")
    # A second sample of the same files, from chunks no split and no look had read (README: a second look).
    splits["outside2-xstest-v1"] = with_prompts(parse(raw / "outside2-v1.txt"), v1, "prompts-v1.txt")
    seen = {r["id"] for r in splits["outside-xstest-v1"]}
    assert not seen & {r["id"] for r in splits["outside2-xstest-v1"]}, "a reply in both outside samples"
    for rows in splits.values():
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "duplicate ids"
    ASSETS.mkdir(parents=True, exist_ok=True)
    for old in ASSETS.glob("*.jsonl"):
        old.unlink()
    for name, rows in splits.items():
        write(ASSETS / f"{name}.jsonl", rows)


if __name__ == "__main__":
    main()
