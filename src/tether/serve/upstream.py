"""An upstream OpenAI-compatible server as the gateway's backend: each request forwarded at once, over
pooled connections, without the batching an in-process model needs (the upstream batches for itself);
token counts from the upstream's ``usage``."""

from __future__ import annotations

import os

import httpx

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
        self.client = httpx.AsyncClient(
            timeout=timeout_s, headers={"Authorization": f"Bearer {key}"} if key else {},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    def count_tokens(self, prompt: Prompt) -> int | None:
        """Unknown before the call (the gateway then reserves one token per character of the prompt)."""
        return None

    async def complete(self, prompt: Prompt, settings: GenerationSettings) -> Served:
        """The upstream's reply."""
        body: dict[str, object] = {"model": self.model, "max_tokens": settings.max_new_tokens,
                                   "temperature": settings.temperature, "top_p": settings.top_p,
                                   "seed": settings.seed, **({"stop": settings.stop} if settings.stop else {})}
        chat = isinstance(prompt, list)
        body["messages" if chat else "prompt"] = prompt
        self.calls += 1
        try:
            reply = await self.client.post(f"{self.url}/{'chat/completions' if chat else 'completions'}", json=body)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{type(exc).__name__} from {self.url}") from None
        if reply.status_code != 200:
            raise UpstreamError(f"HTTP {reply.status_code} from {self.url}: {reply.text[:200]}")
        try:
            data = reply.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise UpstreamError(f"{self.url} answered without a completion: {reply.text[:200]}") from None
        usage = data.get("usage") or {}
        return Served(Completion(text or "", [], finish_reason="length" if choice.get("finish_reason") == "length"
                                 else "stop"), int(usage.get("prompt_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))

    def close(self) -> None:
        """Nothing to wait for: connections close with the process."""
