"""Any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, a hosted API) as a :class:`Generator`.

Requests go to ``{url}/chat/completions`` with the standard library's HTTP client, several at a
time (threads), each retried with exponential back-off. A request that still fails does not raise:
its completion comes back empty with ``finish_reason="error"`` and the reason in ``error``, so one
bad request never loses a batch; callers count and report errors.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field

from tether.core.config import Config
from tether.data.records import Prompt
from tether.models.generation import Completion, GenerationSettings


class EndpointOptions(Config):
    """How to talk to an OpenAI-compatible endpoint (everything but where it is)."""

    model: str = Field("default", description="the model name the endpoint serves")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key, if any")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, description="per request")
    retries: int = Field(2, ge=0, description="retries after a failed request")


class EndpointConfig(EndpointOptions):
    """An OpenAI-compatible chat-completions endpoint."""

    url: str = Field(description="base URL, up to and including /v1 (e.g. http://localhost:8000/v1)")


class HTTPGenerator:
    """A :class:`Generator` over an OpenAI-compatible endpoint (text only: no token ids or log-probs)."""

    def __init__(self, cfg: EndpointConfig) -> None:
        self._cfg = cfg
        self._endpoint = cfg.url.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(cfg.api_key_env, "")

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[Completion]:
        """Complete every prompt; a string prompt is sent as one user message."""
        def one(indexed: tuple[int, Prompt]) -> Completion:
            index, prompt = indexed
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            return self.complete(messages, settings, seed=settings.seed + index)

        with ThreadPoolExecutor(max_workers=self._cfg.concurrency) as pool:
            return list(pool.map(one, enumerate(prompts)))

    def complete(self, messages: list[dict[str, str]], settings: GenerationSettings, *, seed: int) -> Completion:
        """One chat completion, retried; never raises for a failed request."""
        body: dict[str, Any] = {"model": self._cfg.model, "messages": messages, "max_tokens": settings.max_new_tokens,
                                "temperature": settings.temperature, "top_p": settings.top_p, "seed": seed}
        if settings.stop:
            body["stop"] = settings.stop
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        error = ""
        for attempt in range(self._cfg.retries + 1):
            try:
                request = urllib.request.Request(self._endpoint, data=json.dumps(body).encode(), headers=headers,
                                                 method="POST")
                with urllib.request.urlopen(request, timeout=self._cfg.timeout_s) as response:
                    payload: Any = json.loads(response.read())
                choice = payload["choices"][0]
                reason = choice.get("finish_reason") or "eos"
                return Completion(text=str(choice["message"]["content"] or ""), token_ids=[],
                                  finish_reason="length" if reason == "length" else "stop" if settings.stop and
                                  reason == "stop" else "eos")
            except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < self._cfg.retries:
                    time.sleep(0.5 * 2 ** attempt)
        return Completion(text="", token_ids=[], finish_reason="error", error=error[:300])
