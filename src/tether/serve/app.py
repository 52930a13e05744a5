"""The OpenAI-compatible application: ``/v1/models``, ``/v1/chat/completions`` (streamed over SSE or
not) and ``/v1/completions``, behind API keys and their scopes; every error in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``), so the official clients raise their own
exception classes for it.

The in-process model completes a request before it is streamed: the stream carries the finished reply
in word-sized chunks (token-by-token streaming, and output guards on the stream, come with the guard
hooks).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tether.models.generation import Completion, GenerationSettings
from tether.serve.batching import BatchingGenerator, Served
from tether.serve.keys import ApiKey, KeyStore


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def response(self) -> JSONResponse:
        """The JSON response."""
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


class _Open(BaseModel):
    # Clients send fields this server does not use (logprobs, user, ...): accepted and ignored.
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Open):
    """One message; content as text or as OpenAI's list of text parts."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class _Sampling(_Open):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str


def create_app(generator: BatchingGenerator, keys: KeyStore, model: str, *, default_max_tokens: int = 256,
               max_tokens_limit: int = 4096) -> FastAPI:
    """The application serving ``generator`` as ``model``: ``default_max_tokens`` for a request that names
    none, ``max_tokens_limit`` the most any request may ask for, whatever its key allows."""
    app = FastAPI(title="tether serve", version="1")
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return APIError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None,
                        code="invalid_request").response()

    def authenticate(request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        key = keys.authenticate(secret) if secret else None
        if key is None:
            raise APIError(401, "Invalid or missing API key (Authorization: Bearer tk-...)", code="invalid_api_key")
        state = key.state()
        if state != "active":
            raise APIError(401, f"API key {key.id} is {state}", code=f"key_{state}")
        return key

    def settings_for(key: ApiKey, body: _Sampling, asked: int | None) -> GenerationSettings:
        if body.model != model:
            raise APIError(404, f"The model '{body.model}' does not exist; this server serves '{model}'",
                           param="model", code="model_not_found")
        if not key.scopes.allows_model(body.model):
            raise APIError(403, f"API key {key.id} may not use model '{body.model}'", type_="permission_error",
                           param="model", code="model_not_allowed")
        cap = key.scopes.max_tokens
        if asked is not None and cap is not None and asked > cap:
            raise APIError(403, f"API key {key.id} may ask for at most {cap} tokens per request, not {asked}",
                           type_="permission_error", param="max_tokens", code="max_tokens_not_allowed")
        if asked is not None and asked > max_tokens_limit:
            raise APIError(400, f"max_tokens is {asked}; this server generates at most {max_tokens_limit}",
                           param="max_tokens", code="max_tokens_too_large")
        if body.n != 1:
            raise APIError(400, "n must be 1", param="n", code="unsupported_value")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        tokens = asked or (min(default_max_tokens, cap) if cap else default_max_tokens)
        return GenerationSettings(max_new_tokens=tokens, temperature=body.temperature, top_p=body.top_p, stop=stop,
                                  seed=body.seed if body.seed is not None else 0)

    async def complete(prompt: Any, settings: GenerationSettings) -> Served:
        try:
            served = await asyncio.wrap_future(generator.submit(prompt, settings))
        except Exception as exc:  # the model raised: the client gets why, in OpenAI's shape, not a bare 500
            raise APIError(502, f"the model failed: {type(exc).__name__}: {str(exc)[:200]}", type_="api_error",
                           code="model_error") from None
        if served.completion.finish_reason == "error":
            raise APIError(502, f"the model failed: {served.completion.error or 'no completion'}", type_="api_error",
                           code="upstream_error")
        return served

    def usage(served: Served) -> dict[str, int]:
        made = len(served.completion.token_ids)
        return {"prompt_tokens": served.prompt_tokens, "completion_tokens": made,
                "total_tokens": served.prompt_tokens + made}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        key = authenticate(request)
        served = [model] if key.scopes.allows_model(model) else []
        return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "tether"}
                                           for m in served]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        key = authenticate(request)
        settings = settings_for(key, body, body.max_completion_tokens or body.max_tokens)
        prompt = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        served = await complete(prompt, settings)
        ident, now, text = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), served.completion.text
        reason = _finish(served.completion)
        if body.stream:
            return _sse(_chat_chunks(ident, now, model, text, reason))
        return {"id": ident, "object": "chat.completion", "created": now, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": reason, "logprobs": None}],
                "usage": usage(served)}

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        key = authenticate(request)
        settings = settings_for(key, body, body.max_tokens)
        served = await complete(body.prompt, settings)
        ident, now, text = f"cmpl-{uuid.uuid4().hex}", int(time.time()), served.completion.text
        reason = _finish(served.completion)
        if body.stream:
            return _sse(_text_chunks(ident, now, model, text, reason))
        return {"id": ident, "object": "text_completion", "created": now, "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
                "usage": usage(served)}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _finish(completion: Completion) -> str:
    return "length" if completion.finish_reason == "length" else "stop"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) + ([text[len(text.rstrip()):]] if text != text.rstrip() else [])


async def _chat_chunks(ident: str, created: int, model: str, text: str, reason: str) -> AsyncIterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(text):
        yield chunk({"content": piece})
    yield chunk({}, reason)


async def _text_chunks(ident: str, created: int, model: str, text: str, reason: str) -> AsyncIterator[dict[str, Any]]:
    for piece in _pieces(text):
        yield {"id": ident, "object": "text_completion", "created": created, "model": model,
               "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
    yield {"id": ident, "object": "text_completion", "created": created, "model": model,
           "choices": [{"index": 0, "text": "", "finish_reason": reason, "logprobs": None}]}


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
