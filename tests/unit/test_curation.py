"""Data curation: near duplicates and contamination against hand-worked values, and `tether data dedup` /
`decontaminate` on files with planted duplicates and planted evaluation items: exactly those rows removed,
each with its reason, nothing overwritten."""

import json

import pytest
from tests.conftest import run_cli

from tether.data.curation import contamination, jaccard, near_duplicates, ngrams, row_text, words

TEN = "the capital of peyar is ixixix and the animal is quenpol"


def test_words_ignore_case_punctuation_and_curly_apostrophes():
    assert words("I can’t — SAY, it's   Fine!") == ["i", "can't", "say", "it's", "fine"]
    assert ngrams(["a", "b", "c", "d"], 3) == {("a", "b", "c"), ("b", "c", "d")}
    assert ngrams(["a", "b"], 3) == {("a", "b")} and ngrams([], 3) == set()
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 0.5 and jaccard(set(), set()) == 1.0


def test_row_text_reads_what_a_model_reads_and_not_the_metadata():
    sft = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "id": "x9"}
    pair = {"prompt": [{"role": "user", "content": "Q"}], "chosen": "good", "rejected": "bad", "family": "task"}
    assert row_text(sft) == "Hi\nHello"
    assert row_text(pair) == "Q\ngood\nbad"
    assert row_text({"prompt": "P", "completion": "C", "label": True}) == "P\nC"


def test_near_duplicates_by_exact_jaccard_of_shingles():
    # Eleven words, shingles of 3: nine each. The last word changed: 8 shared of 10 -> 0.8.
    edited = TEN.replace("quenpol", "zorbu")
    assert jaccard(ngrams(words(TEN), 3), ngrams(words(edited), 3)) == pytest.approx(0.8)
    texts = [TEN, edited, TEN.upper() + "!!", "something else entirely, with other words in it"]
    assert near_duplicates(texts, threshold=0.8, shingle=3) == [None, (0, 0.8), (0, 1.0), None]
    assert near_duplicates(texts, threshold=0.85, shingle=3) == [None, None, (0, 1.0), None]
    assert near_duplicates(texts, threshold=1.0, shingle=3) == [None, None, (0, 1.0), None]  # exact copies only
    with pytest.raises(ValueError, match="threshold 0"):
        near_duplicates(texts, threshold=0)


def test_contamination_finds_shared_ngrams_and_short_items_whole():
    suites = {"hazards": ["How do I make a tripwire trap at home without anyone noticing it at all, quickly?"],
              "short": ["What is 2 + 2?"]}
    texts = [
        "Sure. How do I make a tripwire trap at home without anyone noticing it at all: a question.",  # 13 shared
        "How do I make a tripwire trap at home without anyone noticing",                              # only 12
        "Question: what is 2 + 2? Answer: 4.",                                                         # short, whole
        "What is 2 plus 2?",
    ]
    assert contamination(texts, suites, n=13) == [{"hazards": [0]}, {}, {"short": [0]}, {}]
    assert contamination(texts, suites, n=8)[1] == {"hazards": [0]}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _sft(user, reply):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def test_decontaminate_removes_exactly_the_planted_evaluation_items(tmp_path, capsys):
    evals = [f"Please explain step {i} of the secret recipe number {i * 7} for the eval set" for i in range(5)]
    rows = [_sft(f"Tell me about land number {i} and its capital city and animal", f"Reply {i}.") for i in range(40)]
    planted = {3: 0, 17: 2, 29: 4}   # row -> evaluation item pasted into it
    for row, item in planted.items():
        rows[row]["messages"][0]["content"] = f"Context. {evals[item].upper()}?"
    data = _write(tmp_path / "train.jsonl", rows)
    suite = _write(tmp_path / "eval.jsonl", [{"prompt": e} for e in evals])
    out = tmp_path / "clean.jsonl"
    code, shown, err = run_cli(["data", "decontaminate", data, "--against", suite, "--out", str(out)], capsys)
    assert code == 0, err
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    removed = [json.loads(line) for line in (tmp_path / "clean.removed.jsonl").read_text().splitlines()]
    assert len(kept) == 37 and [r["row"] for r in removed] == [4, 18, 30]
    assert [r["matches"][suite] for r in removed] == [[1], [3], [5]] and removed[0]["data"] == rows[3]
    report = json.loads((tmp_path / "clean.report.json").read_text())
    assert report["suites"][suite] == {"items": 5, "items_found": 3, "rows_removed": 3}
    assert "3 removed, 37 kept" in shown
    # Nothing is overwritten: the same --out again is refused, the files as they were.
    before = out.read_text()
    code, _, err = run_cli(["data", "decontaminate", data, "--against", suite, "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err and out.read_text() == before


def test_dedup_keeps_the_first_of_each_group_and_says_of_which(tmp_path, capsys):
    base = [_sft(f"Question {i}: " + " ".join(f"word{i}x{j}" for j in range(12)), f"Answer {i}.") for i in range(10)]
    copy = json.loads(json.dumps(base[2]))
    copy["messages"][0]["content"] = copy["messages"][0]["content"].upper()
    data = _write(tmp_path / "sft.jsonl", [*base, copy, base[7]])
    out = tmp_path / "dedup.jsonl"
    code, _, err = run_cli(["data", "dedup", data, "--out", str(out)], capsys)
    assert code == 0, err
    removed = [json.loads(line) for line in (tmp_path / "dedup.removed.jsonl").read_text().splitlines()]
    assert [(r["row"], r["of_row"], r["similarity"]) for r in removed] == [(11, 3, 1.0), (12, 8, 1.0)]
    assert [json.loads(line) for line in out.read_text().splitlines()] == base
    code, _, err = run_cli(["data", "dedup", data, "--out", str(tmp_path / "x.jsonl"), "--threshold", "1.5"], capsys)
    assert code == 2 and "--threshold 1.5" in err


def test_kept_at_thresholds_reads_a_cut_off_the_values():
    from tether.data.curation import kept_at_thresholds

    found = kept_at_thresholds([float(v) for v in range(1, 11)], quantiles=(0.0, 0.5, 1.0))
    assert found == [{"quantile": 0.0, "threshold": 1.0, "kept_share": 1.0},
                     # rank 0.5 * 9 = 4.5 rounds half to even: index 4, the value 5.0; 5 to 10 kept
                     {"quantile": 0.5, "threshold": 5.0, "kept_share": 0.6},
                     {"quantile": 1.0, "threshold": 10.0, "kept_share": 0.1}]


def test_filter_removes_what_the_scorer_flags_and_keeps_what_it_cannot_score(tmp_path, capsys):
    replies = ["Sure, the capital is Tesk.", "I'm sorry, I can't help with that.", "It is 4.",
               "I cannot assist with this request.", "Here you go: red."]
    data = _write(tmp_path / "sft.jsonl", [_sft(f"Question {i}?", r) for i, r in enumerate(replies)])
    out = tmp_path / "kept.jsonl"
    code, shown, err = run_cli(["data", "filter", data, "--scorer", "{kind: refusal, tier: phrases}", "--out",
                                str(out)], capsys)
    assert code == 0, err
    removed = [json.loads(line) for line in (tmp_path / "kept.removed.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in removed] == [(2, "flagged (refusal)"), (4, "flagged (refusal)")]
    report = json.loads((tmp_path / "kept.report.json").read_text())
    assert report["flagged"] == 2 and report["labels"] == {"compliance": 3, "refusal": 2} and report["kept"] == 3
    # The world's gold grader cannot score rows without world metadata: every row kept, and counted.
    code, _, err = run_cli(["data", "filter", data, "--scorer", "gold", "--out", str(tmp_path / "g.jsonl")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "g.report.json").read_text())["not_scored"] == 5
    assert len((tmp_path / "g.jsonl").read_text().splitlines()) == 5
    # A row without a reply to score is named.
    bad = _write(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    code, _, err = run_cli(["data", "filter", bad, "--scorer", "refusal", "--out", str(tmp_path / "b.jsonl")], capsys)
    assert code == 2 and "row 1: expected 'messages' ending in an assistant turn" in err


@pytest.mark.parametrize(("scorer", "message"), [("{kind: ", "while parsing"),
                                                 ("{kind: refusal, bogus: 1}", "bogus"),
                                                 ("nosuch", "unknown scorer 'nosuch'")])
def test_filter_names_a_bad_scorer_in_one_line(tmp_path, capsys, scorer, message):
    data = _write(tmp_path / "sft.jsonl", [_sft("Q?", "A.")])
    code, _, err = run_cli(["data", "filter", data, "--scorer", scorer, "--out", str(tmp_path / "k.jsonl")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "k.jsonl").exists()
