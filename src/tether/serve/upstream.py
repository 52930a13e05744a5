"""An upstream OpenAI-compatible server as the gateway's backend: each request forwarded at once, over
pooled connections, without the batching an in-process model needs (the upstream batches for itself);
token counts from the upstream's ``usage``. A streamed request is streamed from the upstream too
(``stream_options.include_usage`` asks for its token counts; an upstream that sends none counts 0)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tether.data.records import Prompt
from tether.models.generation import Completion, GenerationSettings
from tether.serve.batching import Served


class UpstreamError(RuntimeError):
    """The upstream did not answer with a completion."""


class UpstreamBackend:
    """Forwards chat (a message list) to ``/chat/completions`` and text to ``/completions`` of ``url``."""

    def __init__(self, url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 max_connections: int = 1000) -> None:
        self.url, self.model, self.calls = url.rstrip("/"), model, 0
        key = os.environ.get(api_key_env)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.max_connections = aiohttp.ClientTimeout(total=timeout_s), max_connections
        # aiohttp rather than httpx here: httpx's pool checks every idle connection on every request, which
        # under load cost more than the rest of the gateway together.
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the server's event loop (a session belongs to the loop it was made in).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections))
        return self._session

    def count_tokens(self, prompt: Prompt) -> int | None:
        """Unknown before the call (the gateway then reserves one token per character of the prompt)."""
        return None

    def _request(self, prompt: Prompt, settings: GenerationSettings) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": settings.max_new_tokens,
                                "temperature": settings.temperature, "top_p": settings.top_p,
                                "seed": settings.seed, **({"stop": settings.stop} if settings.stop else {})}
        chat = isinstance(prompt, list)
        body["messages" if chat else "prompt"] = prompt
        return f"{self.url}/{'chat/completions' if chat else 'completions'}", body

    async def complete(self, prompt: Prompt, settings: GenerationSettings) -> Served:
        """The upstream's reply."""
        url, body = self._request(prompt, settings)
        chat = "messages" in body
        self.calls += 1
        try:
            async with self._client().post(url, json=body) as reply:
                raw = await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{type(exc).__name__} from {self.url}") from None
        text_body = raw.decode(errors="replace")
        if reply.status != 200:
            raise UpstreamError(f"HTTP {reply.status} from {self.url}: {text_body[:200]}")
        try:
            data = json.loads(text_body)
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError(f"{self.url} answered without a completion: {text_body[:200]}") from None
        usage = data.get("usage") or {}
        return Served(Completion(text or "", [], finish_reason="length" if choice.get("finish_reason") == "length"
                                 else "stop"), int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))

    async def stream(self, prompt: Prompt, settings: GenerationSettings) -> AsyncIterator[str | Served]:
        """The upstream's reply streamed: its pieces as they arrive, then the whole as :class:`Served`."""
        url, body = self._request(prompt, settings)
        chat = "messages" in body
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        self.calls += 1
        text, ended_by_length = "", False
        usage: dict[str, Any] = {}
        try:
            async with self._client().post(url, json=body) as reply:
                if reply.status != 200:
                    raise UpstreamError(f"HTTP {reply.status} from {self.url}: "
                                        f"{(await reply.read()).decode(errors='replace')[:200]}")
                async for raw_line in reply.content:
                    line = raw_line.decode(errors="replace").strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise UpstreamError(f"{self.url} streamed a frame that is not JSON: {data[:200]}") from None
                    if "error" in chunk:
                        raise UpstreamError(f"{self.url} streamed an error: {str(chunk['error'])[:200]}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        if piece:
                            text += piece
                            yield piece
                        ended_by_length = ended_by_length or choice.get("finish_reason") == "length"
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{type(exc).__name__} from {self.url}") from None
        yield Served(Completion(text, [], finish_reason="length" if ended_by_length else "stop"),
                     int(usage.get("prompt_tokens") or 0),
                     int(usage.get("completion_tokens") or 0))

    def close(self) -> None:
        """Nothing to wait for: the connections close with the process (the session is its event loop's)."""
