"""`tether oversee debate` on tiny world models: every protocol runs, the figures are what the saved
transcripts give, and the transcripts page opens in a real browser."""

import contextlib
import io
import json
import shutil

import pytest
from tests.conftest import run_cli

from tether.oversight.report import per_question

TINY = ["--set", "judge=world:tiny", "--set", "arguer=world:tiny", "--set", "judge_steps=2", "--set",
        "arguer_steps=2", "--set", "train_questions=16", "--set", "test_questions=6", "--set", "best_of=[1,2]",
        "--set", "max_new_tokens=8"]


@pytest.fixture(scope="module")
def debate_run(tmp_path_factory):
    """One run shared by the tests (module scope: capsys is per test, so output is captured here)."""
    from tether.cli.main import main

    out = tmp_path_factory.mktemp("debate") / "run"
    shown, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(["oversee", "debate", *TINY, "--out", str(out)])
    return out, (int(done.value.code or 0), shown.getvalue(), err.getvalue())


def test_every_protocol_is_judged_and_the_figures_are_the_transcripts(debate_run):
    out, (code, shown, err) = debate_run
    assert code == 0, err
    summary = json.loads((out / "debate.json").read_text())
    rows = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    runs = {r["run"] for r in rows}
    assert runs == {"direct", "passage", "consultancy@1", "consultancy@2", "debate@1", "debate@2",
                    "debate-sequential@2", "consultancy-unverified@2", "debate-unverified@2"}
    for name in runs:
        mine = [r for r in rows if r["run"] == name]
        # Consultancy: a consultant for each option of each question; the rest: one case per question.
        assert len(mine) == (12 if name.startswith("consultancy") else 6)
        protocol, _, n = name.partition("@")
        found = summary["protocols"][protocol][n] if n else summary["protocols"][protocol]
        by_q: dict[str, list[float]] = {}
        for r in mine:
            by_q.setdefault(r["id"], []).append(r["score"])
        want = sum(sum(v) / len(v) for v in by_q.values()) / len(by_q)
        assert found["accuracy"]["value"] == pytest.approx(want, abs=1e-4), name  # rounded to 4 places
    for r in rows:
        # The judge's verdict is scored against the true option, and nobody argued in the judge-alone run.
        assert r["score"] == (0.5 if r["verdict"] is None else float(r["verdict"] == r["answer"]))
        assert abs(sum(r["probs"]) - 1) < 1e-4
        if r["run"] == "direct":
            assert r["turns"] == []
        if r["run"].startswith("debate"):
            assert sorted(t["side"] for t in r["turns"]) == [0, 1]
            assert all(t["candidates"] == int(r["run"].split("@")[1]) for t in r["turns"])
    assert set(summary["differences"]) == {"1", "2"} and "debate" in summary["strongest_minus_weakest"]
    assert "debate - consultancy" in shown


def test_the_arguer_was_trained_to_quote_and_the_judge_to_read(debate_run):
    out, _ = debate_run
    arguer = [json.loads(line)["messages"] for line in (out / "arguer.jsonl").read_text().splitlines()]
    judge = [json.loads(line)["messages"] for line in (out / "judge.jsonl").read_text().splitlines()]
    assert len(arguer) == len(judge) == 16
    assert all(m[-1]["content"].startswith("<quote>") for m in arguer)
    assert all(m[-1]["content"] in ("A", "B") for m in judge)
    # The judge's lessons never hold a whole passage: what it is shown is a few sentences at most.
    assert all(m[0]["content"].count(".") <= 4 for m in judge)


def test_per_question_groups_a_consultancys_two_cases():
    class T:
        def __init__(self, qid, score):
            self.question, self.score = type("Q", (), {"id": qid})(), score

    assert per_question([T("a", 1.0), T("b", 0.0), T("a", 0.5)]) == {"a": [1.0, 0.5], "b": [0.0]}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's package)")
def test_the_transcripts_page_opens_in_a_browser_with_quotes_marked(debate_run):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the dev extra")
    out, _ = debate_run
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto((out / "transcripts.html").resolve().as_uri())
        cards = page.locator(".transcript").count()
        headings = page.locator("h2").all_inner_texts()
        verified = page.locator(".transcript li .good").count()
        browser.close()
    # Six cases a run, twelve for consultancy (a consultant per option); the passage run's 9 sentences a case
    # are quotes the source says, so they are marked verified.
    assert not problems and "debate@2" in headings and cards == 6 * 6 + 3 * 12 and verified >= 6 * 9


# --- tether oversee protocols: the protocols on a user's own questions and models ---------------------------

def _questions_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_oversee_protocols_judges_your_questions_with_your_models(tmp_path, capsys):
    rows = [{"id": f"q{i}", "question": "What is the capital of Peyar?", "options": ["Tesk", "Ixixix"],
             "source": "The capital of Peyar is Ixixix. The capital of Dorva is Tesk.", "answer": "Ixixix"}
            for i in range(3)] + [{"question": "Which river is longest?", "options": ["Ul", "Vo", "Ra"],
                                   "source": "The Ul is longest."}]
    questions = _questions_file(tmp_path / "qs.jsonl", rows)
    out = tmp_path / "run"
    code, shown, err = run_cli(["oversee", "protocols", "--set", f"questions={questions}", "--set", "judge=world:tiny",
                                "--set", "arguer=world:tiny", "--set", "max_new_tokens=6", "--set", "best_of=2",
                                "--set", "protocols=[direct,consultancy,debate-sequential]", "--out", str(out)],
                               capsys)
    assert code == 0, err
    summary = json.loads((out / "oversee.json").read_text())
    cases = {name: found["cases"] for name, found in summary["protocols"].items()}
    assert cases == {"direct": 4, "consultancy": 2 * 3 + 3, "debate-sequential": 4}
    rows_out = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    # The question without an answer is judged but not scored; accuracy is over the three that have one.
    assert [r["score"] for r in rows_out if r["id"] == "q3"] == [None] * (1 + 3 + 1)
    assert summary["protocols"]["direct"]["accuracy"]["n"] == 3
    assert all(len(r["turns"]) == 3 for r in rows_out if r["run"] == "debate-sequential" and r["id"] == "q3")
    assert "judge accuracy" in shown and (out / "transcripts.html").exists()

    # Open roles: the arguer picks each question's side; critique follows each consultant with a critic.
    out = tmp_path / "open"
    code, _, err = run_cli(["oversee", "protocols", "--set", f"questions={questions}", "--set", "judge=world:tiny",
                            "--set", "arguer=world:tiny", "--set", "max_new_tokens=6", "--set", "roles=open",
                            "--set", "protocols=[consultancy,critique,debate-sequential]", "--out", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "oversee.json").read_text())
    assert {name: found["cases"] for name, found in summary["protocols"].items()} == {
        "consultancy": 4, "critique": 4, "debate-sequential": 4}
    chosen = summary["open_roles"]["chosen"]
    assert len(chosen) == 4 and chosen[3] in (0, 1, 2)
    rows_out = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    for r in rows_out:
        side = chosen[int(r["id"][1:])]
        assert r["assigned"] == side and r["turns"][0]["side"] == side and not r["turns"][0]["against"]
        if r["run"] == "critique":
            assert [(t["speaker"], t["side"], t["against"]) for t in r["turns"]] == [
                ("Consultant", side, False), ("Critic", side, True)]


@pytest.mark.parametrize(("row", "message"), [
    ({"question": "Q?", "options": ["a"], "source": "s"}, "qs.jsonl:1: field 'options'"),
    ({"question": "Q?", "options": ["a", "b"], "source": "s", "answer": "c"}, "'c' is not one of the options"),
    ({"question": "Q?", "options": ["a", "b"], "source": "s", "answer": 2}, "answer 2 is not an option's index"),
    ({"question": "Q?", "options": ["a", "b"]}, "qs.jsonl:1: field 'source'"),
])
def test_oversee_protocols_names_the_bad_line_and_exits_2_before_loading_a_model(tmp_path, capsys, row, message):
    questions = _questions_file(tmp_path / "qs.jsonl", [row])
    code, _, err = run_cli(["oversee", "protocols", "--set", f"questions={questions}", "--set", "judge=nowhere/model",
                            "--set", "arguer=nowhere/model", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing half-made to clear away before the corrected rerun
