import json
from pathlib import Path

import pytest

from tether.core.errors import DataError
from tether.data.io import read_records, save_dataset, write_jsonl
from tether.data.records import PreferenceRecord, PromptRecord, SFTRecord, UnpairedRecord
from tether.data.sources import load_records


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_each_kind_in_trl_formats(tmp_path: Path):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    sft = _write(tmp_path / "sft.jsonl", [json.dumps({"messages": msgs, "id": 7}),
                                         json.dumps({"prompt": "2+2=", "completion": "4"})])
    records = read_records(sft, SFTRecord).records
    assert records[0].messages[1].content == "hello"
    assert records[0].model_extra == {"id": 7}  # extra columns are kept
    assert records[1].completion == "4"
    pref = _write(tmp_path / "pref.jsonl", [json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})])
    assert read_records(pref, PreferenceRecord).records[0].rejected == "b"
    unpaired = _write(tmp_path / "kto.jsonl", [json.dumps({"prompt": "q", "completion": "a", "label": False})])
    assert read_records(unpaired, UnpairedRecord).records[0].label is False
    prompts = _write(tmp_path / "p.jsonl", [json.dumps({"prompt": msgs[:1]})])
    assert read_records(prompts, PromptRecord).records[0].prompt[0].role == "user"


def test_implicit_prompt_preference_is_split_at_shared_prefix():
    user = {"role": "user", "content": "q"}
    row = {"chosen": [user, {"role": "assistant", "content": "good"}],
           "rejected": [user, {"role": "assistant", "content": "bad"}]}
    record = PreferenceRecord.model_validate(row)
    assert [m.content for m in record.prompt] == ["q"]
    assert record.chosen[0].content == "good"


def test_missing_field_names_file_line_and_field(tmp_path: Path):
    path = _write(tmp_path / "pref.jsonl", [json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}),
                                           json.dumps({"prompt": "q", "chosen": "a"})])
    with pytest.raises(DataError, match=r"pref.jsonl:2: field 'rejected': Field required"):
        read_records(path, PreferenceRecord)


def test_bad_json_and_bad_role_are_named(tmp_path: Path):
    path = _write(tmp_path / "sft.jsonl", ['{"messages": [}'])
    with pytest.raises(DataError, match=r"sft.jsonl:1: invalid JSON"):
        read_records(path, SFTRecord)
    path = _write(tmp_path / "sft2.jsonl", [json.dumps({"messages": [{"role": "robot", "content": "x"}]})])
    with pytest.raises(DataError, match=r"sft2.jsonl:1: field 'messages.0.role'"):
        read_records(path, SFTRecord)


def test_skip_bad_counts_every_skipped_row(tmp_path: Path):
    good = json.dumps({"prompt": "q", "completion": "a", "label": True})
    path = _write(tmp_path / "kto.jsonl", [good, "not json", json.dumps({"prompt": "q"}), good, "[1, 2]"])
    loaded = read_records(path, UnpairedRecord, skip_bad=True)
    assert len(loaded.records) == 2
    assert [s.split(":")[1] for s in loaded.skipped] == ["2", "3", "5"]


def test_sft_record_without_assistant_turn_is_rejected():
    with pytest.raises(ValueError, match="no assistant turn"):
        SFTRecord.model_validate({"messages": [{"role": "user", "content": "hi"}]})


def test_missing_file_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl", SFTRecord)


def test_jsonl_and_hf_dataset_roundtrip(tmp_path: Path):
    records = [PreferenceRecord(prompt="q", chosen=f"a{i}", rejected="b") for i in range(3)]
    assert write_jsonl(tmp_path / "out.jsonl", records) == 3
    assert read_records(tmp_path / "out.jsonl", PreferenceRecord).records == records
    save_dataset(tmp_path / "ds", records)
    assert read_records(tmp_path / "ds", PreferenceRecord).records == records


def test_builtin_source_is_deterministic():
    a = load_records("builtin:arithmetic-chat", SFTRecord, seed=3).records
    b = load_records("builtin:arithmetic-chat", SFTRecord, seed=3).records
    assert a == b and len(a) == 512


def test_length_groups_minimise_padding_and_keep_every_index():
    from tether.data.collate import length_groups

    assert length_groups([10, 100, 12, 95], 2) == [[0, 2], [3, 1]]
    lengths = [7, 1, 30, 2, 29, 8, 31, 1]
    groups = length_groups(lengths, 3)
    assert sorted(i for g in groups for i in g) == list(range(8)) and len(groups) <= 3
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    # The optimum over every split of the sorted lengths into three runs, by brute force.
    import itertools

    order = sorted(range(8), key=lambda i: lengths[i])
    best = min(sum(len(p) * max(lengths[i] for i in p) for p in (order[:a], order[a:b], order[b:]) if p)
               for a, b in itertools.combinations(range(1, 8), 2))
    assert padded == best


def test_padded_widths_round_up_on_a_gpu_only():
    from tether.data.collate import pad_batch, pad_multiple
    from tether.data.records import TokenizedExample

    assert pad_multiple("cpu") == 1 and pad_multiple("cuda") == 64 and pad_multiple("cuda:1") == 64
    rows = [TokenizedExample([5, 6, 7], [False, True, True]), TokenizedExample([8], [True])]
    plain = pad_batch(rows, pad_id=0)
    assert plain.input_ids.shape == (2, 3)
    wide = pad_batch(rows, pad_id=0, multiple_of=8)
    assert wide.input_ids.shape == (2, 8)
    assert wide.input_ids[:, :3].equal(plain.input_ids) and int(wide.attention_mask.sum()) == 4
    assert not wide.loss_mask[:, 3:].any() and wide.loss_mask[:, :3].equal(plain.loss_mask)
