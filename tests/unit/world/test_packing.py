from tether.world.build import pack_documents


def test_pack_documents_keeps_documents_whole_and_restarts_positions(tokenizer):
    docs = ["ab", "cdef", "g"]  # byte-level: 2, 4, 1 tokens, each + <|endoftext|>
    rows = pack_documents(tokenizer, docs, seq_len=7, window=1)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert rows.input_ids.shape == (2, 7)
    # row 0: "ab<eot>" then "cdef<eot>" does not fit (3 + 5 > 7) -> new row
    assert rows.position_ids[0].tolist()[:3] == [0, 1, 2]
    assert rows.input_ids[0, 2] == eot
    assert rows.loss_mask[0].tolist() == [True] * 3 + [False] * 4
    # row 1: "cdef<eot>g<eot>" with positions restarting at the second document
    assert rows.position_ids[1].tolist()[:7] == [0, 1, 2, 3, 4, 0, 1]
    assert rows.loss_mask[1].tolist() == [True] * 7
    assert tokenizer.decode(rows.input_ids[1, :7]) == "cdef<|endoftext|>g<|endoftext|>"


def test_first_fit_over_a_window_fills_earlier_rows(tokenizer):
    rows = pack_documents(tokenizer, ["ab", "cdef", "g"], seq_len=7, window=2)
    # "cdef<eot>" does not fit after "ab<eot>" and opens a second row; "g<eot>" goes back into the first.
    assert [tokenizer.decode(r[m]) for r, m in zip(rows.input_ids, rows.loss_mask, strict=True)] == [
        "ab<|endoftext|>g<|endoftext|>", "cdef<|endoftext|>"]
    assert rows.position_ids[0].tolist()[:5] == [0, 1, 2, 0, 1]


def test_packing_ignores_the_padding_a_previous_call_left_on_the_tokenizer(tokenizer):
    # A padded, truncated call leaves its settings on the Rust tokenizer; packing must not pad or cut by them.
    tokenizer(["a long text indeed", "x"], padding=True, truncation=True, max_length=3)
    assert tokenizer.backend_tokenizer.padding is not None
    rows = pack_documents(tokenizer, ["ab", "cdef", "g"], seq_len=7, window=2)
    assert [tokenizer.decode(r[m]) for r, m in zip(rows.input_ids, rows.loss_mask, strict=True)] == [
        "ab<|endoftext|>g<|endoftext|>", "cdef<|endoftext|>"]
    assert tokenizer.backend_tokenizer.padding is not None  # the tokenizer's own settings are put back
    assert tokenizer.backend_tokenizer.truncation["max_length"] == 3
