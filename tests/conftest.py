"""Hermetic tests: no network, no progress bars, small deterministic fixtures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TETHER_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_ignore_collect(collection_path, config):
    """tests/gpu needs a CUDA device: without one it is not collected (rather than collected and skipped)."""
    if collection_path.name == "gpu" and collection_path.parent.name == "tests":
        import torch

        return not torch.cuda.is_available()
    return None


MYPY: pytest.StashKey[subprocess.Popen[str]] = pytest.StashKey()


def start_mypy() -> subprocess.Popen[str]:
    """mypy over the project (its settings in pyproject.toml), started in the background at low priority."""
    return subprocess.Popen([sys.executable, "-m", "mypy"], cwd=Path(__file__).resolve().parents[1], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: os.nice(10))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start mypy as soon as its test is known to run, so the rest of the run overlaps it."""
    if any(item.name == "test_mypy_clean" for item in session.items):
        session.config.stash[MYPY] = start_mypy()


@pytest.fixture()
def mypy_process(request: pytest.FixtureRequest) -> subprocess.Popen[str]:
    """The mypy run started at collection (or one started now, when its test runs alone)."""
    return request.config.stash.get(MYPY, None) or start_mypy()


class _NetworkBlockedError(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open an internet connection fails the test (loopback and unix sockets stay allowed)."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "localhost", "::1"):
            raise _NetworkBlockedError(f"test tried to reach the network: {address}")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="session")
def docs_tables():
    """``docs/results/tables.py``, the docs' results tool (not a package: loaded from its file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", Path(__file__).resolve().parents[1] / "docs" /
                                                  "results" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``tether ARGS`` in this process: its exit code, stdout and stderr."""
    from tether.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


@pytest.fixture(scope="session")
def tokenizer():
    from tether.models.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama(tokenizer):
    from tether.models.tiny import build_tiny_model

    return build_tiny_model("llama", tokenizer, seed=0)


class ChatEndpoint:
    """A loopback OpenAI-compatible ``/v1/chat/completions`` server: ``reply(body) -> text`` answers each
    request (``None``: HTTP 500); ``requests`` records every body received."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.reply = lambda body: body["messages"][-1]["content"]
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                text = endpoint.reply(body)
                if text is None:
                    self.send_response(500)
                    self.end_headers()
                    return
                if body.get("stream"):  # server-sent events, a frame per word, usage last when asked for
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    words = text.split(" ")
                    for i, word in enumerate(words):
                        delta = {"content": word + (" " if i < len(words) - 1 else "")}
                        self.wfile.write(f"data: {json.dumps({'choices': [{'delta': delta}]})}\n\n".encode())
                    done = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
                    self.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
                    if (body.get("stream_options") or {}).get("include_usage"):
                        usage = {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}
                        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                payload = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def chat_endpoint():
    """A :class:`ChatEndpoint` for the test's duration."""
    endpoint = ChatEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch):
    """Run ``fn`` as a process killed right after the checkpoint of step ``step`` is written
    (KeyboardInterrupt, as Ctrl-C), then put the real checkpointing back: ``killed(step, fn)``."""
    from tether.engine import loop as loop_module

    real_save = loop_module.TrainLoop.save_checkpoint

    def killed(step: int, fn):
        def save_then_die(self):
            path = real_save(self)
            if self.step_count == step:
                raise KeyboardInterrupt
            return path

        monkeypatch.setattr(loop_module.TrainLoop, "save_checkpoint", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                fn()
        finally:
            monkeypatch.setattr(loop_module.TrainLoop, "save_checkpoint", real_save)

    return killed
