"""The oversight experiments' raw outputs, gathered and tabulated for docs/oversight.md and the README.

    python docs/results/oversight/summary.py collect   # runs/<experiment>-<seed>/ -> docs/results/oversight/
    python docs/results/oversight/summary.py render    # the markdown tables, from the committed JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
EXPERIMENTS = {"weak-to-strong": "weak_to_strong.json", "debate": "debate.json",
               "amplification": "amplification.json"}


def collect() -> None:
    """Copy every finished run's JSON here with its command, machine and versions (from its record)."""
    for name, file in EXPERIMENTS.items():
        for seed in range(3):
            run = ROOT / "runs" / f"{name}-{seed}"
            if not (run / file).exists():
                continue
            record = json.loads((run / "record.json").read_text())
            out = {"command": _command(run, name), "machine": record.get("host"),
                   "versions": record.get("versions"), "git": record.get("git_revision"),
                   "finished_at": record.get("finished_at"), "seconds": record.get("seconds"),
                   "result": json.loads((run / file).read_text())}
            target = HERE / f"{name.replace('-', '_')}_world{seed}.json"
            target.write_text(json.dumps(out, indent=2) + "\n")
            print(f"{run} -> {target.name}")


def _command(run: Path, name: str) -> str:
    import yaml

    from tether.core.recipes import RECIPES

    config = yaml.safe_load((run / "config.yaml").read_text())
    defaults = RECIPES.get(name).config().model_dump(mode="json")
    def shown(value: Any) -> str:  # a list as the CLI takes it: [a,b]
        return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)

    changed = [f"--set {k}={shown(v)}" for k, v in config.items() if k != "out" and defaults.get(k) != v]
    return " ".join(["tether", RECIPES.get(name).group, name, *changed, "--out", f"runs/{run.name}"])


def _load(name: str) -> dict[int, dict[str, Any]]:
    found = {}
    for seed in range(3):
        path = HERE / f"{name}_world{seed}.json"
        if path.exists():
            found[seed] = json.loads(path.read_text())["result"]
    return found


def _cell(m: dict[str, Any]) -> str:
    return f"{100 * m['value']:.1f} [{100 * m['ci_low']:.1f}–{100 * m['ci_high']:.1f}]"


def _pgr(p: dict[str, Any] | None) -> str:
    if p is None:
        return "–"
    if p["value"] is None:
        return "undefined (no gap)"
    shown = f"{p['value']:+.2f} [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]"
    return shown if p.get("measurable_gap", True) else f"({shown}: no measurable gap)"


def render() -> None:
    """Print the tables."""
    render_debate()
    render_amplification()
    render_weak_to_strong()


def render_amplification() -> None:
    """Accuracy per round: direct, amplified and distilled, and the answer given most often."""
    runs = _load("amplification")
    if not runs:
        return
    print("\n### Amplification\n")
    print("| world | round | list length (direct, base case) | direct, base case | list length | direct | amplified | "
          "distilled | training answers right | most common answer: direct / amplified / distilled (share) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed, r in runs.items():
        for x in r["rounds"]:
            common = " / ".join(f"{m['answer']} ({100 * m['share']:.0f}%)" for m in
                                (x["most_common_answer"][k] for k in ("direct", "amplified", "distilled")))
            print(f"| {seed} | {x['round']} | {x['size']} | {_cell(x['direct_small'])} | {2 * x['size']} | "
                  f"{_cell(x['direct'])} | {_cell(x['amplified'])} | {_cell(x['distilled'])} | "
                  f"{_cell(x['training_answers_right'])} | {common} |")
    print("\nmodels: " + "; ".join(f"world {s}: {r['model']}" for s, r in runs.items()))


def _diff(d: dict[str, Any]) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def render_debate() -> None:
    """Judge accuracy per protocol and debater strength, and the paired differences, per world."""
    runs = _load("debate")
    if not runs:
        return
    strengths = sorted({int(n) for r in runs.values() for n in r["protocols"]["debate"]})
    strongest = str(max(strengths))
    print("\n### Debate, consultancy and the judge alone\n")
    head = ["world", "judge alone", "judge shown the passage"]
    head += [f"{p} best-of-{n}" for n in strengths for p in ("consultancy", "debate")]
    head += [f"sequential debate best-of-{strongest}", f"consultancy unverified best-of-{strongest}",
             f"debate unverified best-of-{strongest}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for seed, r in runs.items():
        p = r["protocols"]
        cells = [str(seed), _cell(p["direct"]["accuracy"]), _cell(p["passage"]["accuracy"])]
        cells += [_cell(p[k][str(n)]["accuracy"]) for n in strengths for k in ("consultancy", "debate")]
        cells += [_cell(p[k][strongest]["accuracy"]) for k in ("debate-sequential", "consultancy-unverified",
                                                               "debate-unverified")]
        print("| " + " | ".join(cells) + " |")
    print("\n| world | best-of | debate − consultancy | debate − judge alone | consultancy − judge alone | "
          "honest consultant | dishonest consultant | debate: quotes the passage does not hold |")
    print("|---|---|---|---|---|---|---|---|")
    for seed, r in runs.items():
        for n in map(str, strengths):
            d, c, q = r["differences"][n], r["protocols"]["consultancy"][n], r["protocols"]["debate"][n]["quotes"]
            print(f"| {seed} | {n} | {_diff(d['debate-consultancy'])} | {_diff(d['debate-direct'])} | "
                  f"{_diff(d['consultancy-direct'])} | {_cell(c['honest_consultant'])} | "
                  f"{_cell(c['dishonest_consultant'])} | {q['unverified']} of {q['quotes']} quotes unverified; "
                  f"{q['turns_without_quote']} of {q['turns']} turns without a quote |")
    print(f"\n| world | debate: best-of-{strongest} − best-of-{min(strengths)} | consultancy: best-of-{strongest} − "
          f"best-of-{min(strengths)} | debate: verified − unverified | consultancy: verified − unverified |")
    print("|---|---|---|---|---|")
    for seed, r in runs.items():
        t, v = r["strongest_minus_weakest"], r["verified_minus_unverified"]
        print(f"| {seed} | {_diff(t['debate'])} | {_diff(t['consultancy'])} | {_diff(v['debate'])} | "
              f"{_diff(v['consultancy'])} |")
    print("\nmodels: " + "; ".join(f"world {s}: judge {r['judge']}, arguers {r['arguer']}" for s, r in runs.items()))


def render_weak_to_strong() -> None:
    """Weak, ceiling and students per task and world, and PGR."""
    runs = _load("weak_to_strong")
    if not runs:
        return
    print("\n### Weak-to-strong\n")
    print("| task | world | test items | weak | strong on gold (ceiling) | strong on weak labels | "
          "… with the confidence loss | … on the supervisor's confident half | weak labels right (confident half) | "
          "PGR | PGR, confidence loss | PGR, confident half |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    tasks = sorted({t for r in runs.values() for t in r["tasks"]}, key=lambda t: (t.startswith("statements"), t))
    for task in tasks:
        for seed, r in runs.items():
            f = r["tasks"].get(task)
            if f is None:
                continue
            acc = f["accuracy"]
            aux, confident = (_cell(acc[k]) if k in acc else "–" for k in ("student_aux", "student_confident"))
            labels = f"{100 * f['weak_label_accuracy']:.1f}" + (
                f" ({100 * f['confident_label_accuracy']:.1f})" if "confident_label_accuracy" in f else "")
            print(f"| {task} | {seed} | {f['items']['test']} | {_cell(acc['weak'])} | {_cell(acc['ceiling'])} | "
                  f"{_cell(acc['student'])} | {aux} | {confident} | {labels} | {_pgr(f.get('pgr'))} | "
                  f"{_pgr(f.get('pgr_aux'))} | {_pgr(f.get('pgr_confident'))} |")
    print("\nmodels: " + "; ".join(f"world {s}: weak {r['weak']}, strong {r['strong']}" for s, r in runs.items()))


if __name__ == "__main__":
    {"collect": collect, "render": render}[sys.argv[1] if len(sys.argv) > 1 else "render"]()
