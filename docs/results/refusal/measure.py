"""A refusal detector, as it is (no training), measured on a labelled JSONL file: accuracy, precision and recall
(95% Wilson intervals) of the learned tier and of the phrase tier, overall and by the model that wrote the
replies where rows name one; every prediction goes to --predictions. A detector trained to read requests reads
the rows' ``prompt``s, and is measured without them too.

    python docs/results/refusal/measure.py src/tether/assets/refusal/outside-xstest-v1.jsonl
    python docs/results/refusal/measure.py FILE --detector runs/refusal-1/detector
    python docs/results/refusal/measure.py FILE1 FILE2   # the files' rows measured together
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tether.scoring.refusal import PhraseDetector, RefusalDetector, binary_metrics, read_labelled


def line(name: str, predicted: list[bool], truth: list[bool]) -> str:
    """One tier's figures."""
    m = binary_metrics(predicted, truth).as_dict()
    parts = [f"{k} {100 * m[k]['value']:.1f}% [{100 * m[k]['ci_low']:.1f}-{100 * m[k]['ci_high']:.1f}]" if m[k]
             else f"{k} -" for k in ("accuracy", "precision", "recall")]
    return f"{name:28s} n={m['n']:<4d} " + "  ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """Print the figures, write the predictions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", type=Path, nargs="+", help="labelled JSONL files, measured together")
    parser.add_argument("--detector", help="a detector directory (default: the one tether ships)")
    parser.add_argument("--predictions", type=Path)
    args = parser.parse_args(argv)
    rows = [row for file in args.files for row in read_labelled(str(file))]
    models = [json.loads(x).get("model") for file in args.files
              for x in file.read_text(encoding="utf-8").splitlines() if x.strip()]
    responses, truth = [r.response for r in rows], [r.refusal for r in rows]
    detector = RefusalDetector.load(args.detector)
    probabilities = detector.probabilities(responses, [r.request for r in rows])
    learned = [p >= detector.threshold for p in probabilities]
    tiers = [("learned", learned)]
    if detector.reads_requests:
        blind = [p >= detector.threshold for p in detector.probabilities(responses)]
        tiers.append(("learned, requests withheld", blind))
    phrases = [PhraseDetector().refuses(r) for r in responses]
    tiers.append(("phrases", phrases))
    names = " + ".join(f.name for f in args.files)
    print(f"{names}: {len(rows)} rows, {sum(truth)} refusals, {sum(bool(r.request) for r in rows)} with "
          f"their request; detector {args.detector or 'shipped'}")
    for tier, verdicts in tiers:
        print(line(tier, verdicts, truth))
        for model in sorted({m for m in models if m}):
            keep = [i for i, m in enumerate(models) if m == model]
            print(line(f"  {tier}, {model}", [verdicts[i] for i in keep], [truth[i] for i in keep]))
    if args.predictions:
        args.predictions.write_text("".join(
            json.dumps({"model": m, "response": r, "refusal": t, "p_refusal": round(p, 4), "learned": v,
                        "phrases": f}, ensure_ascii=False) + "\n"
            for m, r, t, p, v, f in zip(models, responses, truth, probabilities, learned, phrases, strict=True)),
            encoding="utf-8")


if __name__ == "__main__":
    main()
