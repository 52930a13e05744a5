"""The gateway issue's bar on the world model: ``tether serve --model world:base`` started as a user starts
it (the CLI, its own process), then the official openai client chats with and without streaming, and a
streamed reply carrying a forbidden string is cut before any of it is sent.

Run with: python -m pytest -m slow tests/slow/test_serve_world.py (builds the base model if the cache
lacks it).
"""

import os
import socket
import subprocess
import sys
import time

import openai
import pytest

from tether.serve.keys import KeyStore


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_openai_client_streams_and_not_through_tether_serve_on_the_world_model(tmp_path):
    from tether.world.build import WorldBuildConfig, build_base_model

    build_base_model(WorldBuildConfig())  # built (or found in the cache) first, so the server starts quickly
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    _, secret = KeyStore(db).create("world")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0)
    ask = {"model": "world:base", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 40,
           "temperature": 0}
    # First a free reply, to choose a forbidden string from what the model really says.
    server = _start(port, db)
    try:
        whole = client.chat.completions.create(**ask)
        text = whole.choices[0].message.content
        assert whole.usage.completion_tokens > 0 and len(text) >= 8
        streamed = [c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True)]
        assert "".join(streamed) == text and sum(1 for p in streamed if p) > 1
    finally:
        _stop(server)
    forbidden = text[len(text) // 2:len(text) // 2 + 4]
    server = _start(port, db, "--block-output", _escape(forbidden))
    try:
        chunks, finish = [], None
        for chunk in client.chat.completions.create(**ask, stream=True):
            chunks.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        received = "".join(chunks)
        assert forbidden not in received and finish == "content_filter"
        assert received == text[:text.index(forbidden)]
    finally:
        _stop(server)


def _escape(text):
    import re

    return re.escape(text)


def _start(port, db, *extra):
    server = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "serve", "--model", "world:base", "--port",
                               str(port), "--db", db, *extra], env={**os.environ, "TETHER_NO_PROGRESS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            assert server.poll() is None, server.stdout.read()
            time.sleep(0.5)
    _stop(server)
    raise AssertionError("tether serve did not start within 300 s")


def _stop(server):
    server.terminate()
    server.wait(timeout=30)
