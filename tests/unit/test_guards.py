"""Guards on hand-made text: personal data and secrets found (cards only when they pass Luhn), redacted,
blocked; regex redaction; shadow mode; guard files."""

import json

import pytest

from tether.core.errors import UserError
from tether.guard.base import GUARDS, load_guards
from tether.guard.patterns import RegexGuardConfig
from tether.guard.pii import PiiGuardConfig, find_pii, luhn_valid, redact


def test_luhn_hand_worked():
    # 4539 1488 0343 6467: doubling every second digit from the right gives a sum of 80, a multiple of 10.
    assert luhn_valid("4539 1488 0343 6467")
    assert not luhn_valid("4539 1488 0343 6468")
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")  # the textbook example


def test_find_pii_kinds_and_places():
    text = ("Mail jane.doe@example.co.uk or call +44 20 7946 0958; card 4539-1488-0343-6467, order 4539148803436468. "
            "Key AKIAIOSFODNN7EXAMPLE and ghp_" + "a" * 36 + " here.")
    found = find_pii(text)
    kinds = [(f.kind, text[f.start:f.end]) for f in found]
    assert kinds == [("email", "jane.doe@example.co.uk"), ("phone", "+44 20 7946 0958"),
                     ("card", "4539-1488-0343-6467"), ("aws_key", "AKIAIOSFODNN7EXAMPLE"),
                     ("github_token", "ghp_" + "a" * 36)]  # the order number fails Luhn: not a card
    assert redact(text, found).startswith("Mail [EMAIL] or call [PHONE]; card [CARD], order 4539148803436468.")


def test_dates_prices_and_versions_are_not_pii():
    text = "On 2024-11-29 it cost $1,299.00 (v3.11.7), ref 12-345, room 101."
    assert find_pii(text) == []


def test_a_private_key_block_and_a_jwt_are_secrets():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n-----END RSA PRIVATE KEY-----"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert [f.kind for f in find_pii(f"{key} then {jwt}")] == ["private_key", "jwt"]


def test_the_pii_guard_redacts_inputs_and_outputs_or_blocks_them():
    guard = PiiGuardConfig().build()
    verdict = guard.check_input([{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "I am bob@example.com"}])
    assert verdict.action == "redact" and verdict.categories == ("email",)
    assert verdict.replacement == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "I am [EMAIL]"}]
    out = guard.check_output("Your key is sk-" + "x" * 30 + ".")
    assert out.action == "redact" and out.replacement == "Your key is [OPENAI_KEY]." and out.span == (12, 45)
    assert guard.stream_window is None  # a redaction rewrites text: streams wait for the whole reply
    strict = PiiGuardConfig(on_input="block", on_output="cut", detect=["card"]).build()
    assert strict.check_input([{"role": "user", "content": "4539 1488 0343 6467"}]).action == "block"
    assert strict.check_input([{"role": "user", "content": "bob@example.com"}]).allowed  # not looked for
    assert strict.check_output("pay 4539 1488 0343 6467 now").action == "cut"
    assert "replacement" not in out.as_dict() and "x" * 30 not in str(out.as_dict())  # no secret in the audit


def test_regex_redaction_and_shadow_mode():
    guard = RegexGuardConfig(output=[r"SECRET-\d+"], on_output="redact").build()
    verdict = guard.check_output("a SECRET-12 and SECRET-345.")
    assert verdict.replacement == "a [REDACTED] and [REDACTED]." and guard.stream_window is None
    shadow = RegexGuardConfig(output=["x"], mode="shadow").build()
    assert shadow.shadow and not shadow.check_output("x").allowed  # it judges; the gateway does not act on it


def test_guard_files_are_checked(tmp_path):
    good = tmp_path / "guards.yaml"
    good.write_text("- {kind: pii, name: privacy}\n- {kind: regex, output: [forbidden]}\n")
    assert [g.name for g in load_guards(str(good))] == ["privacy", "regex"]
    with pytest.raises(UserError, match="two guards are named"):
        load_guards(str(good), block_output=["also"])  # the file's regex guard and the flag's share a name
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {kind: pii, detect: [passport]}\n")
    with pytest.raises(UserError, match="detect"):
        load_guards(str(bad))
    assert {"regex", "pii"} <= set(GUARDS.names())


def test_the_refusal_guard_labels_replies_and_never_changes_them():
    from tether.guard.refusal import RefusalGuardConfig
    from tether.serve.hooks import OutputStream

    guard = RefusalGuardConfig().build()
    refused = guard.check_output("I'm sorry, but I can't help with that request.")
    answered = guard.check_output("Preheat the oven to 220 C, then bake the loaf for 30 minutes.")
    assert refused.allowed and refused.categories == ("refusal",) and refused.score > 0.5
    assert answered.allowed and answered.categories == () and answered.score < 0.5
    stream = OutputStream([guard])  # labels only: nothing held back, and no check until the end
    assert stream.feed("I'm sorry, but") == "I'm sorry, but" and stream.checks == 0
    assert stream.finish("I'm sorry, but I can't.") == " I can't." and stream.checks == 1
    assert stream.verdicts[0].categories == ("refusal",)


def test_card_numbers_side_by_side_and_amex_are_read_one_by_one():
    text = "cards 4539 1488 0343 6467 4111 1111 1111 1111 and amex 3782 822463 10005."
    assert [text[f.start:f.end] for f in find_pii(text, ["card"])] == [
        "4539 1488 0343 6467", "4111 1111 1111 1111", "3782 822463 10005"]


def test_auroc_hand_worked():
    from tether.guard.evaluate import auroc

    # Pairs (pos, neg): (0.9,0.1) win, (0.9,0.5) win, (0.5,0.1) win, (0.5,0.5) tie = 3.5 of 4.
    assert auroc([0.9, 0.5], [0.1, 0.5]) == 0.875
    assert auroc([1.0], [0.0]) == 1.0 and auroc([0.0], [1.0]) == 0.0


def test_guard_eval_reports_rates_per_category_and_split(tmp_path, capsys):
    from tether.cli.main import main

    data = tmp_path / "labelled.jsonl"
    rows = [{"text": "mail me at a@b.com", "label": "unsafe", "category": "pii", "split": "a"},
            {"text": "card 4539 1488 0343 6467", "label": True, "category": "pii", "split": "b"},
            {"text": "my number is +44 20 7946 0958", "label": 1, "category": "pii", "split": "b"},
            {"text": "order 4539148803436468", "label": "safe", "split": "a"},
            {"text": "see you on 2024-11-29", "label": "benign", "split": "b"},
            {"response": "write to help@corp.example", "label": "unsafe", "on": "output", "category": "pii"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    guards = tmp_path / "guards.yaml"
    guards.write_text("- {kind: pii}\n")
    with pytest.raises(SystemExit) as done:
        main(["guard", "eval", "--guards", str(guards), "--data", str(data), "--out", str(tmp_path / "out")])
    assert done.value.code in (0, None)
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())["guards"]["pii"]
    assert (report["tp"], report["fp"], report["positives"]) == (4, 0, 4)
    assert report["tpr"]["value"] == 1.0 and report["fpr"]["value"] == 0.0 and report["f1"] == 1.0
    assert set(report["by_split"]) == {"a", "b"} and report["by_category"]["pii"]["tp"] == 4
    assert "TPR 100.0%" in capsys.readouterr().out
    data.write_text('{"text": "x", "label": "maybe"}\n')
    with pytest.raises(SystemExit) as done:
        main(["guard", "eval", "--guards", str(guards), "--data", str(data)])
    assert done.value.code == 2 and "labelled.jsonl:1: label 'maybe'" in capsys.readouterr().err
