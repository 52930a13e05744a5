"""Streams as they are produced: the output hook on a stream (hand-worked), token-by-token delivery through
the official client while the model is still generating, a forbidden string cut before any of it is sent,
the stream's two audit rows, an upstream streamed through, and a learned guard holding or cutting a stream with
its leak measured."""

import json
import threading
import time

import pytest
from tests.serve.test_gateway import _serving, request_rows

from tether.guard.patterns import RegexGuardConfig, longest_match
from tether.models.generation import Completion
from tether.serve.batching import IncrementalDecoder
from tether.serve.hooks import OutputStream


def _guard(*patterns, window=256, on_output="cut"):
    return RegexGuardConfig(output=list(patterns), stream_window=window, on_output=on_output).build()


def test_longest_match_bounds_a_guards_window():
    import re

    assert longest_match(re.compile(r"bad\d")) == 4
    assert longest_match(re.compile(r"SECRET-\d{4}")) == 11
    assert longest_match(re.compile(r"a.*z")) > 10**6  # unbounded
    assert _guard(r"bad\d", r"SECRET-\d{4}").stream_window == 11
    assert _guard(r"a.*z", window=32).stream_window == 32  # capped by the config


def test_the_stream_holds_back_the_guards_window_and_cuts_before_the_match():
    stream = OutputStream([_guard(r"bad\d")])  # window 4
    assert stream.feed("Hello") == "H"
    assert stream.feed("Hello wor") == "ello"
    assert stream.feed("Hello world bad") == " world"
    # "bad7" completes at 12..16: everything before it is sent, none of it.
    assert stream.feed("Hello world bad7 and on") == " "
    assert stream.sent == "Hello world " and stream.blocked is not None and stream.exposed == 0
    assert stream.feed("Hello world bad7 and on and on") == "" and stream.finish("anything") == ""


def test_a_match_longer_than_the_window_is_counted_as_exposed():
    stream = OutputStream([_guard(r"a.*z", window=3)])
    assert stream.feed("xx a12345") == "xx a12"
    assert stream.feed("xx a12345z") == ""          # the match starts at 3: "a12" was already sent
    assert stream.exposed == 3 and stream.blocked.span == (3, 10)


def test_block_guards_end_the_stream_and_whole_reply_guards_buffer_it():
    blocking = OutputStream([_guard(r"bad\d", on_output="block")])
    assert blocking.feed("fine text here") == "fine text "
    assert blocking.feed("fine text here bad1") == "" and blocking.exposed == 0
    whole = OutputStream([_guard(r"bad\d")])
    whole.guards[0].stream_window = None  # a guard that judges whole replies only
    whole.__init__(whole.guards)
    assert whole.feed("a long reply so far") == "" and whole.finish("a long reply so far, done") == (
        "a long reply so far, done")


def test_the_final_reply_is_checked_whole_and_only_joins_onto_what_was_sent():
    stream = OutputStream([], holdback=2)  # a stop string of 3 characters may be in the making
    assert stream.feed("abcd") == "ab"
    assert stream.finish("abcde") == "cde" and stream.sent == "abcde"
    late = OutputStream([_guard(r"bad\d")])
    assert late.feed("ok so far and") == "ok so far"
    assert late.finish("ok so far and bad9") == " and " and late.blocked is not None
    diverged = OutputStream([], holdback=0)
    assert diverged.feed("ab") == "ab" and diverged.finish("xbc") == "" and diverged.diverged


def test_incremental_decoding_never_splits_a_character(tokenizer):
    text = "café ☕ naïve 🙂 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in p for p in pieces)


class _CharTokenizer:
    """One token per character (its code point); a chat is its contents joined."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(m["content"] for m in messages)

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class _GatedGenerator:
    """Reports its reply a character at a time and, after ``gate_at`` characters, waits until the client says
    it has received text: so a stream that only arrived at the end would be caught waiting."""

    def __init__(self, reply, gate_at):
        self.reply, self.gate_at = reply, gate_at
        self.tokenizer = _CharTokenizer()
        self.gate = threading.Event()
        self.opened_by_client = None

    def generate(self, prompts, settings, on_token=None):
        for index in range(len(prompts)):
            for position, char in enumerate(self.reply):
                if position == self.gate_at:
                    self.opened_by_client = self.gate.wait(timeout=10)
                if on_token is not None:
                    on_token(index, ord(char))
        return [Completion(self.reply, [ord(c) for c in self.reply], finish_reason="eos") for _ in prompts]


def test_a_stream_arrives_while_the_model_generates_and_the_guard_cuts_before_the_forbidden_string(tmp_path):
    reply = "Hello there, friend. I will now tell you: the code is SECRET-1234, and more after it."
    model = _GatedGenerator(reply, gate_at=reply.index("the code"))
    guards = [_guard(r"SECRET-\d{4}")]  # window 11
    with _serving(model, "gated", tmp_path / "g.db", guards=guards) as (server, gateway):
        _, secret = gateway.keys.create("streamer")
        chunks, finish = [], None
        for chunk in server.client(secret).chat.completions.create(
                model="gated", messages=[{"role": "user", "content": "hi"}], max_tokens=200, stream=True):
            choice = chunk.choices[0]
            if choice.delta.content:
                chunks.append(choice.delta.content)
                if len("".join(chunks)) >= 10:
                    model.gate.set()  # the first text arrived while the model was still generating
            finish = choice.finish_reason or finish
        assert model.opened_by_client is True
        received = "".join(chunks)
        assert received == reply[:reply.index("SECRET")] and finish == "content_filter"
        assert len(chunks) > 5  # piece by piece, not one block
        # The guard ended the stream while the model generated: its closing row follows once the model is done.
        deadline = time.time() + 10
        while len(rows := request_rows(gateway)) < 2 and time.time() < deadline:
            time.sleep(0.02)
        opened, ended = rows
        assert opened["decision"] == "streaming" and ended["request_id"] == opened["request_id"]
        assert ended["decision"] == "content_filter" and ended["exposed_chars"] == 0
        # Generation stops once the guard ends the stream (how far it got first depends on timing).
        assert ended["sent_chars"] == len(received) and 0 < ended["completion_tokens"] <= len(reply)


def test_text_completions_stream_through_a_guard_that_passes(tmp_path):
    reply = "one two three four five six seven"
    model = _GatedGenerator(reply, gate_at=len(reply))  # never waits
    with _serving(model, "plain", tmp_path / "g.db", guards=[_guard(r"forbidden")]) as (server, gateway):
        _, secret = gateway.keys.create("streamer")
        stream = server.client(secret).completions.create(model="plain", prompt="count", max_tokens=50, stream=True)
        pieces = [(c.choices[0].text, c.choices[0].finish_reason) for c in stream]
        assert "".join(p for p, _ in pieces) == reply and pieces[-1][1] == "stop"
        rows = request_rows(gateway)
        assert [r["decision"] for r in rows] == ["streaming", "answered"]
        assert rows[1]["guards"][0]["allowed"] is True and rows[1]["diverged"] is False


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_streams_through(chat_endpoint, tmp_path, stream):
    from tether.serve.upstream import UpstreamBackend

    chat_endpoint.reply = lambda body: "upstream says: " + body["messages"][-1]["content"]
    backend = UpstreamBackend(chat_endpoint.url, "up")
    with _serving(backend, "relay", tmp_path / "g.db") as (server, gateway):
        _, secret = gateway.keys.create("relay")
        ask = {"model": "relay", "messages": [{"role": "user", "content": "ping pong"}], "max_tokens": 9}
        if stream:
            chunks = [c.choices[0].delta.content or "" for c in
                      server.client(secret).chat.completions.create(**ask, stream=True)]
            assert "".join(chunks) == "upstream says: ping pong"
            assert chat_endpoint.requests[-1]["stream"] is True
            ended = json.loads(list(gateway.audit.rows())[-1][1])
            assert ended["decision"] == "answered" and ended["completion_tokens"] == 4  # the upstream's usage
        else:
            reply = server.client(secret).chat.completions.create(**ask)
            assert reply.choices[0].message.content == "upstream says: ping pong"


def test_a_switch_pulled_mid_stream_ends_it_within_a_second_even_while_the_model_is_silent(tmp_path):
    import openai

    reply = "Some words arrive first, then the model stalls for a long while before the rest."
    model = _GatedGenerator(reply, gate_at=40)
    with _serving(model, "stalls", tmp_path / "g.db") as (server, gateway):
        _, secret = gateway.keys.create("streamer")
        stream = server.client(secret).chat.completions.create(
            model="stalls", messages=[{"role": "user", "content": "hi"}], max_tokens=200, stream=True)
        received, killed_at = "", None
        with pytest.raises(openai.APIError, match="drill"):
            for chunk in stream:
                received += chunk.choices[0].delta.content or ""
                if received and killed_at is None:  # the model is now stalled at its gate
                    gateway.kills.kill("all", "drill")
                    killed_at = time.monotonic()
        assert killed_at is not None and time.monotonic() - killed_at < 1.0
        assert 0 < len(received) <= 40
        model.gate.set()
        deadline = time.time() + 10
        while len(rows := request_rows(gateway)) < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert [r["decision"] for r in rows] == ["streaming", "killed"]
        assert rows[1]["completion_tokens"] == 40  # the switch stopped the model too: its 40 tokens are counted


def test_incremental_decoding_costs_the_same_per_token_however_long_the_text(tokenizer):
    class Counting:
        def __init__(self):
            self.decoded = 0

        def decode(self, ids, skip_special_tokens=True):
            self.decoded += len(ids)
            return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    counting = Counting()
    decoder = IncrementalDecoder(counting)
    ids = tokenizer("word " * 400, add_special_tokens=False)["input_ids"]
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert counting.decoded < 8 * len(ids)  # a few tokens per push, not the whole text each time


def _classifier(tmp_path, **cfg):
    # A trained n-gram guard by hand: "secret recipe" scores sigmoid(6), anything without both words far less.
    from tether.guard.classifier import ClassifierGuardConfig, NgramModel, Thresholds, TrainedGuard

    TrainedGuard(NgramModel({"secret": 0, "recipe": 1}, [5.0, 5.0], -4.0), Thresholds(0.9, 0.5, 0.99), {}).save(
        tmp_path / "clf")
    return ClassifierGuardConfig(path=str(tmp_path / "clf"), name="clf", on="output", **cfg).build()


def _stream(server, secret, model):
    chunks, finish = [], None
    for chunk in server.client(secret).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=300, stream=True):
        choice = chunk.choices[0]
        chunks.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
    return "".join(chunks), finish


def _closing_row(gateway):
    deadline = time.time() + 10
    while len(rows := request_rows(gateway)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    return rows[-1]


@pytest.mark.parametrize("policy", ["hold", "stream-then-cut"])
def test_a_learned_output_guard_on_a_stream_holds_or_cuts_and_the_leak_is_measured(tmp_path, policy):
    reply = "Of course, happy to help with that today. " * 2 + "Here is the secret recipe: mix it all. " * 3
    unsafe_from = reply.index("secret recipe")
    guard = _classifier(tmp_path, stream_window=None if policy == "hold" else 16, context=16, on_output="cut")
    model = _GatedGenerator(reply, gate_at=len(reply) + 1)  # never waits
    with _serving(model, "clf-model", tmp_path / "c.db", guards=[guard]) as (server, gateway):
        _, secret = gateway.keys.create("streamer")
        received, finish = _stream(server, secret, "clf-model")
        row = _closing_row(gateway)
    assert finish == "content_filter" and row["decision"] == "content_filter"
    if policy == "hold":  # nothing is sent before the whole reply is checked: no leak
        assert received == "" and row["exposed_chars"] == 0
    else:  # streamed 16 characters behind the model: the stream ends where the unsent text begins
        assert 0 < len(received) < unsafe_from + len("secret recipe") - 16 and reply.startswith(received)
        assert "recipe" not in received and row["sent_chars"] == len(received)
        # The flag rests on the last 32 characters read (window + context), of which the client had some.
        assert 0 < row["exposed_chars"] <= 32
        if len(received) == unsafe_from - 4:  # checked at every character: flagged at "recipe"'s last letter L,
            assert row["exposed_chars"] == 15  # having been sent up to L - 17, read from L - 32
