"""The HTML reports open in a real headless browser (Debian's Chromium via playwright): plots drawn, no errors."""

import json
import shutil
from pathlib import Path

import pytest

from tether.evals.compare import compare
from tether.evals.report import write_compare_report
from tether.evals.run import EvalConfig, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the dev extra")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's package)")


def _open(path: Path) -> dict:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        plots = page.locator(".plot svg")
        boxes = [plots.nth(i).bounding_box() for i in range(plots.count())]
        seen = {
            "title": page.title(), "problems": problems, "boxes": boxes,
            "sections": page.locator("section h2").all_inner_texts(),
            "bars": page.locator(".plot svg path").count(),
            "agreement_rows": page.locator("#scorers-vs-gold table").first.locator("tr").count()
            if page.locator("#scorers-vs-gold").count() else 0,
        }
        browser.close()
    return seen


def _eval(out: Path, seed: int) -> None:
    run(EvalConfig.model_validate({"model": {"path": "tiny:llama"}, "suite": {"n": 3, "heldout_n": 1},
                                   "generation": {"max_new_tokens": 6}, "seed": seed, "out": str(out)}))


def test_eval_and_compare_reports_render_with_plots_and_no_errors(tmp_path):
    _eval(tmp_path / "a", 0)
    _eval(tmp_path / "b", 1)
    seen = _open(tmp_path / "a" / "report.html")
    assert seen["problems"] == []
    assert seen["title"] == "tether eval: world-hhh"
    for section in ("Harmlessness", "Helpfulness", "Honesty", "Corrigibility", "Format", "Scorers against gold"):
        assert any(s.startswith(section) for s in seen["sections"]), (section, seen["sections"])
    assert len(seen["boxes"]) >= 5 and all(b is not None and b["width"] > 200 and b["height"] > 50
                                           for b in seen["boxes"])
    assert seen["bars"] > 20 and seen["agreement_rows"] >= 2  # header + the refusal detector's row

    result = compare([tmp_path / "a", tmp_path / "b"])
    write_compare_report(result, tmp_path / "compare.html")
    (tmp_path / "compare.json").write_text(json.dumps(result))
    seen = _open(tmp_path / "compare.html")
    assert seen["problems"] == [] and seen["title"] == "tether eval compare"
    assert len(seen["boxes"]) >= 5 and all(b is not None and b["width"] > 200 for b in seen["boxes"])
