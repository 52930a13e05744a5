"""The OpenAI-compatible application: ``/v1/models``, ``/v1/chat/completions`` (streamed over SSE or
not), ``/v1/completions`` and ``/v1/tools/code``, behind API keys and their scopes; every error in
OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``), so the official clients raise their
own exception classes for it.

Every request passes, in order: its key (401), its scopes (403/404), the kill switches (503), the input
guards (400), the throttles (429 with ``Retry-After``); the model; the output guards (a blocked reply is
cut or emptied, ``finish_reason: content_filter``); the kill switches again (a reply not yet sent is
withheld); then its audit row is committed and only then is the reply sent. Refused requests are
audited too. A streamed reply is sent as the model produces it, through the output guards on the stream
(:class:`tether.serve.hooks.OutputStream`); its audit row is committed before the first byte and a
second row says how it ended; a kill switch set meanwhile ends it with an error frame.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from tether.core.errors import UserError
from tether.core.sandbox import Sandbox, SandboxUnavailableError
from tether.guard.base import Guard, Verdict
from tether.models.generation import Completion, GenerationSettings
from tether.scoring.refusal import PhraseDetector
from tether.serve.audit import AuditLog
from tether.serve.batching import Backend, Served
from tether.serve.commits import GroupCommit
from tether.serve.hooks import OutputStream
from tether.serve.keys import ApiKey, KeyStore
from tether.serve.kill import KillSwitches
from tether.serve.limits import Admission, CounterStoreError, Limiter, RedisWindows, Refusal
from tether.serve.review import ReviewItem, ReviewQueue
from tether.serve.rollout import Router
from tether.serve.store import connect
from tether.serve.watch import Watch, WatchProcess

logger = logging.getLogger(__name__)
# Decisions after which a routed request counts toward its rollout step: the model was asked.
_ROUTED_OUTCOMES = ("answered", "content_filter", "model_error", "upstream_error")


@dataclass
class Gateway:
    """The gateway's state, all in one database: keys, the audit chain, kill switches, throttles, the review
    queue; and the group commit that writes a request's admission, settlement and audit row."""

    engine: sa.Engine
    keys: KeyStore
    audit: AuditLog
    kills: KillSwitches
    limiter: Limiter
    commits: GroupCommit
    review: ReviewQueue

    @classmethod
    def open(cls, store: str | sa.Engine, *, fail_closed: bool = True, kill_refresh_s: float = 0.25,
             redis: str | None = None) -> Gateway:
        """The gateway on ``store`` (a SQLAlchemy URL or engine); per-minute counters in Redis at ``redis``."""
        engine = connect(store) if isinstance(store, str) else store
        windows = RedisWindows(redis) if redis else None
        return cls(engine, KeyStore(engine), AuditLog(engine),
                   KillSwitches(engine, refresh_s=kill_refresh_s, fail_closed=fail_closed),
                   Limiter(engine, windows=windows), GroupCommit(engine), ReviewQueue(engine))


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The error object."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The JSON response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


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


class KillRequest(BaseModel):
    """``POST /admin/kill`` and ``/admin/revive``."""

    target: str = Field(pattern=r"^(all|model:.+|key:.+)$", description="all, model:NAME or key:ID")
    reason: str = Field("killed through the admin API", max_length=500)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str


class CodeRequest(BaseModel):
    """``POST /v1/tools/code``: a Python program to run in the sandbox, with its stdin and files."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=200_000, description="Python source, run as /work/main.py")
    stdin: str = Field("", max_length=1_000_000)
    files: dict[str, str] = Field(default_factory=dict, max_length=64,
                                  description="relative path -> text, beside main.py in /work")


def create_app(generator: Backend, gateway: Gateway, model: str, *, default_max_tokens: int = 256,
               max_tokens_limit: int = 4096, guards: Sequence[Guard] = (), sandbox: Sandbox | None = None,
               sandbox_slots: int = 2, review_timeout_s: float = 300.0,
               review_default: Literal["reject", "approve"] = "reject", review_poll_s: float = 0.2,
               watch: Watch | WatchProcess | None = None, rollouts: Router | None = None,
               rollout_check_s: float = 1.0) -> FastAPI:
    """The application serving ``generator`` as ``model``: ``default_max_tokens`` for a request that names
    none, ``max_tokens_limit`` the most any request may ask for, whatever its key allows; ``guards`` check
    every conversation before the model and every reply before it is sent (:mod:`tether.serve.hooks`);
    ``sandbox`` runs ``/v1/tools/code`` for keys whose scopes allow the ``code`` tool, ``sandbox_slots``
    programs at once (None: the tool is off). What a guard in ``escalate`` mode objects to is held in the
    review queue (:mod:`tether.serve.review`) for at most ``review_timeout_s``, then ``review_default``
    applies; a held request looks for its decision every ``review_poll_s``. ``watch`` is given every
    request's record once it is audited (:mod:`tether.serve.watch`: a queue put, never a wait). ``rollouts``
    routes each request to the current version or a canary (:mod:`tether.serve.rollout`), and its step is
    judged every ``rollout_check_s``."""
    app = FastAPI(title="tether serve", version="1")
    if rollouts is not None:
        controller: list[asyncio.Task[None]] = []

        async def judge_steps() -> None:
            while True:
                await asyncio.sleep(rollout_check_s)
                try:
                    await run_in_threadpool(rollouts.tick)
                except Exception:  # the store or a canary's load failed: tried again at the next tick
                    logger.exception("rollout tick failed")

        async def start_controller() -> None:
            await run_in_threadpool(rollouts.prepare)  # a promoted or running canary is loaded before serving
            controller.append(asyncio.get_running_loop().create_task(judge_steps()))

        async def stop_controller() -> None:
            for task in controller:
                task.cancel()
            await run_in_threadpool(rollouts.close)

        app.router.on_startup.append(start_controller)
        app.router.on_shutdown.append(stop_controller)
    if watch is not None:
        app.router.on_startup.append(watch.start)
        app.router.on_shutdown.append(watch.stop)  # before the commits close: its last writes go through them
    app.router.on_shutdown.append(gateway.commits.close)  # the writes already queued are committed first
    slots = asyncio.Semaphore(sandbox_slots)
    refusals = PhraseDetector()
    created = int(time.time())
    metrics = _Metrics()

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def _store_failed(_request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        # The store could not be read or written: nothing is served unaudited or unthrottled (fail closed).
        return APIError(503, f"the gateway's store failed: {type(exc).__name__}", type_="service_unavailable",
                        code="store_unavailable").response()

    @app.exception_handler(CounterStoreError)
    async def _counters_failed(_request: Request, exc: CounterStoreError) -> JSONResponse:
        return APIError(503, str(exc), type_="service_unavailable", code="store_unavailable").response()

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(exc).__name__}", type_="api_error", code="internal_error"
                        ).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        error = APIError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None,
                         code="invalid_request")
        await audit({"endpoint": request.url.path, "status": 400, "decision": "invalid_request", "key": None,
                     "model": None})
        return error.response()

    def authenticate(request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
        key = gateway.keys.authenticate(secret) if secret else None
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

    async def audit(record: dict[str, Any]) -> int:
        """Commit ``record`` as the chain's next row (in the next group commit); its sequence number."""
        return await gateway.commits.run(lambda conn: gateway.audit.append_in(conn, record))

    async def admit(key: ApiKey, reserve: int) -> Admission | Refusal:
        """The throttles' answer for one request, committed."""
        return await gateway.commits.run(lambda conn: gateway.limiter.admit_in(conn, key, reserve))

    async def finish(admitted: Admission | None, used: int, budget: bool, record: dict[str, Any]) -> int:
        """A request's last write, one transaction: its in-flight slot released, its reservation settled to the
        tokens it ``used``, its audit row appended; the row's sequence number."""
        def write(conn: sa.Connection) -> int:
            if admitted is not None:
                gateway.limiter.release_in(conn, admitted)
                gateway.limiter.settle_in(conn, admitted, used, budget=budget)
            if rollouts is not None and record.get("version") and record.get("decision") in _ROUTED_OUTCOMES:
                flagged = any(g.get("on") == "output" and not g.get("allowed", True) and not g.get("shadow")
                              for g in record.get("guards") or [])
                rollouts.rollouts.count_in(conn, record["rollout"], record["step"], record["version"],
                                           error=record["decision"] in ("model_error", "upstream_error"),
                                           flagged=flagged, refused=bool(record.get("refused")))
            return gateway.audit.append_in(conn, record)

        return await gateway.commits.run(write)

    def watched(record: dict[str, Any], messages: list[dict[str, str]], reply: str | None) -> None:
        """Hand the request to the monitor (its audit row with the texts it saw added, not stored)."""
        if watch is not None:
            user = [m["content"] for m in messages if m.get("role") == "user"]
            if not watch.submit({**record, "prompt": user[-1] if user else "", "response": reply, "ts": time.time()}):
                metrics.monitor_dropped.inc()

    def check_kill(key: ApiKey) -> None:
        why = gateway.kills.blocked(model, key.id)
        if why:
            raise APIError(503, why, type_="service_unavailable", code="killed")

    async def serve(request: Request, body: _Sampling, asked: int | None, prompt: Any, messages: list[dict[str, str]],
                    frames: _Frames) -> Any:
        start = time.perf_counter()
        record: dict[str, Any] = {"endpoint": request.url.path, "model": body.model, "key": None,
                                  "stream": body.stream, "guards": []}
        admitted: Admission | None = None  # held from admission until finish() settles and releases it
        used, budget = 0, False            # tokens the model used; whether the key has a budget to settle
        reviewed: str | None = None        # a reviewer's own reply to an escalated request
        try:
            key = await run_in_threadpool(authenticate, request)
            record["key"] = key.id
            settings = settings_for(key, body, asked)
            await run_in_threadpool(check_kill, key)
            mine = [g for g in guards if key.scopes.guards is None or g.name in key.scopes.guards]
            for guard in mine:
                verdict = await run_in_threadpool(guard.check_input, messages)
                record["guards"].append({"on": "input", **verdict.as_dict(), **({"shadow": True} if guard.shadow
                                                                                else {})})
                if verdict.allowed or guard.shadow:
                    continue
                if getattr(guard, "escalate", False):  # a person decides; the request waits for them
                    item = await hold("input", verdict, messages, None, key, record)
                    if item.outcome == "approved":
                        continue
                    if item.outcome == "edited":  # the reviewer's text is the reply; the model is not called
                        reviewed = item.text or ""
                        break
                    raise APIError(400, f"the request was rejected {_by(item)} (escalated by the {verdict.guard} "
                                   f"guard: {verdict.reason})", code="content_filter")
                if verdict.action == "redact" and isinstance(verdict.replacement, list):
                    # The model sees the redacted conversation; the next guards check it as the model will.
                    messages = verdict.replacement
                    prompt = messages if isinstance(prompt, list) else messages[-1]["content"]
                    continue
                raise APIError(400, f"the request was blocked by the {verdict.guard} guard: {verdict.reason}",
                               code="content_filter")
            if reviewed is None and key.scopes.review:  # a monitor escalated the key: a person decides each request
                held = Verdict(False, "monitor", reason="the key's traffic is held for review")
                item = await hold("input", held, messages, None, key, record)
                if item.outcome == "edited":
                    reviewed = item.text or ""
                elif item.outcome != "approved":
                    raise APIError(400, f"the request was rejected {_by(item)} (the key's traffic is held for "
                                   "review)", code="content_filter")
            if reviewed is not None:
                response = await answer_reviewed(reviewed, body.stream, key, record, start, frames)
                watched(record, messages, reviewed)  # the record as audited, status and latency in
                return response
            # Reserve the most the request can use: the reply's max_tokens and the prompt's length, counted with
            # the model's tokenizer (estimated at 1 token a character where the model has none). Settled after.
            # Off the event loop: the rollout's state is read from the store when its cached copy is stale.
            backend, routed = await run_in_threadpool(rollouts.route) if rollouts is not None else (generator, {})
            record |= routed
            counted = await run_in_threadpool(backend.count_tokens, prompt)
            reserve = settings.max_new_tokens + (counted if counted is not None
                                                 else len("".join(m["content"] for m in messages)))
            admission = await admit(key, reserve)
            if isinstance(admission, Refusal):
                raise APIError(429, admission.reason, type_="rate_limit_error", code="rate_limited",
                               headers={"Retry-After": str(max(1, round(admission.retry_after))), **admission.headers})
            admitted, budget = admission, key.scopes.budget_tokens is not None
            if body.stream:
                response = await stream(backend, key, settings, prompt, messages, mine, admitted, record, start,
                                        frames)
                admitted = None  # the stream settles and releases it when it ends
                return response
            model_start = time.perf_counter()
            served = await complete(backend, prompt, settings)
            model_s = time.perf_counter() - model_start
            used = served.prompt_tokens + served.completion_tokens
            text, reason = served.completion.text, _finish(served.completion)
            for guard in mine:  # on the whole reply, before any of it is sent; each on what the ones before left
                verdict = await run_in_threadpool(guard.check_output, text)
                record["guards"].append({"on": "output", **verdict.as_dict(), **({"shadow": True} if guard.shadow
                                                                                 else {})})
                if verdict.allowed or guard.shadow:
                    continue
                if getattr(guard, "escalate", False):  # the reply waits for a person, the request's slot held
                    item = await hold("output", verdict, messages, text, key, record)
                    if item.outcome == "approved":
                        continue
                    text, reason = (item.text or "", "stop") if item.outcome == "edited" else ("", "content_filter")
                    break
                if verdict.action == "redact" and isinstance(verdict.replacement, str):
                    text = verdict.replacement
                    continue
                cut = verdict.span[0] if verdict.span and verdict.action == "cut" else 0
                text, reason = text[:cut], "content_filter"
                break
            await run_in_threadpool(check_kill, key)  # killed while generating: the reply is not sent
            if "version" in record:  # a rollout's online gate compares the versions' refusal rates
                record["refused"] = refusals.refuses(text)
        except APIError as error:
            record |= {"status": error.status, "decision": error.code,
                       "latency_ms": round(1000 * (time.perf_counter() - start), 3)}
            await finish(admitted, used, budget, record)
            metrics.observe(request.url.path, error.status, str(error.code), time.perf_counter() - start, None, 0, 0)
            watched(record, messages, None)
            raise
        total = time.perf_counter() - start
        record |= {"status": 200, "decision": "answered", "latency_ms": round(1000 * total, 3),
                   "prompt_tokens": served.prompt_tokens, "completion_tokens": served.completion_tokens,
                   "finish_reason": reason}
        # Committed before a byte of the reply leaves: an answered request always has its audit row.
        record["audit_seq"] = await finish(admitted, used, budget, record)
        metrics.observe(request.url.path, 200, "answered", total, total - model_s, served.prompt_tokens,
                        served.completion_tokens)
        watched(record, messages, text)
        headers = {**admission.headers, "x-tether-overhead-ms": f"{1000 * (total - model_s):.2f}",
                   "x-tether-audit-seq": str(record["audit_seq"]),
                   **({"x-tether-version": record["version"]} if "version" in record else {})}
        return JSONResponse(frames.whole(text, reason, usage(served)), headers=headers)

    async def hold(stage: Literal["input", "output"], verdict: Verdict, messages: list[dict[str, str]],
                   reply: str | None, key: ApiKey, record: dict[str, Any]) -> ReviewItem:
        """Escalate to the review queue and wait for the decision (or the deadline's default). The item and
        an ``escalated`` audit row are committed together before the wait: a crash loses no held item."""
        def write(conn: sa.Connection) -> str:
            item_id = gateway.review.submit_in(
                conn, stage=stage, guard=verdict.guard, reason=verdict.reason, conversation=messages, reply=reply,
                key_id=key.id, score=verdict.score, timeout_s=review_timeout_s, default_action=review_default)
            gateway.audit.append_in(conn, {"endpoint": record["endpoint"], "key": key.id, "model": record["model"],
                                           "status": 202, "decision": "escalated", "review_item": item_id,
                                           "stage": stage, "guard": verdict.guard})
            return item_id

        item_id = await gateway.commits.run(write)
        while True:
            item = await run_in_threadpool(gateway.review.get, item_id)
            assert item is not None  # rows of the queue are never deleted
            if item.outcome is not None:
                break
            if time.time() >= item.deadline:
                await run_in_threadpool(gateway.review.expire, item_id)  # unless a reviewer decided just now
                continue
            await asyncio.sleep(review_poll_s)
        record.setdefault("reviews", []).append({"item": item.id, "stage": stage, "guard": verdict.guard,
                                                 "state": item.state, "outcome": item.outcome,
                                                 "by": item.decided_by})
        return item

    async def answer_reviewed(text: str, streamed: bool, key: ApiKey, record: dict[str, Any], start: float,
                              frames: _Frames) -> Any:
        """A reviewer's reply to a held request, sent in the request's shape (no model call, no tokens)."""
        await run_in_threadpool(check_kill, key)  # a switch set while the request was held stops it too
        record |= {"status": 200, "decision": "answered_by_reviewer", "finish_reason": "stop",
                   "latency_ms": round(1000 * (time.perf_counter() - start), 3)}
        seq = await finish(None, 0, False, record)
        metrics.observe(record["endpoint"], 200, "answered_by_reviewer", time.perf_counter() - start, None, 0, 0)
        headers = {"x-tether-audit-seq": str(seq)}
        none = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if not streamed:
            return JSONResponse(frames.whole(text, "stop", none), headers=headers)

        async def events() -> AsyncIterator[str]:
            yield frames.opening()
            yield frames.piece(text)
            yield frames.closing("stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def stream(backend: Backend, key: ApiKey, settings: GenerationSettings, prompt: Any,
                     messages: list[dict[str, str]], mine: list[Guard], admitted: Admission, record: dict[str, Any],
                     start: float, frames: _Frames) -> StreamingResponse:
        """A streamed reply: sent as the model produces it, through the output guards (OutputStream)."""
        budget = key.scopes.budget_tokens is not None
        source = backend.stream(prompt, settings)
        model_start = time.perf_counter()
        try:
            first = await anext(source)  # a model that fails at once gets an HTTP error, not a broken stream
        except Exception as exc:
            raise _model_error(exc) from None
        # The request's row is committed before the first byte; a second row, joined by request_id, says
        # how the stream ended (a server killed meanwhile leaves the first).
        request_id = uuid.uuid4().hex
        record |= {"status": 200, "decision": "streaming", "request_id": request_id,
                   "latency_ms": round(1000 * (time.perf_counter() - start), 3)}
        seq = await audit(record)
        checker = OutputStream(mine, holdback=max((len(s) for s in settings.stop), default=1) - 1)
        end: dict[str, Any] = {"endpoint": record["endpoint"], "model": record["model"], "key": key.id,
                               "request_id": request_id, "status": 200, "decision": "client_closed",
                               **{k: record[k] for k in ("rollout", "step", "version", "served_by") if k in record}}

        pump = _Pump(first, source)

        async def events() -> AsyncIterator[str]:
            text, closed, next_kill_check = "", False, 0.0
            try:
                yield frames.opening()
                while True:
                    # Waiting at most 0.1 s for the model, so a switch is seen even while it produces nothing.
                    item = await pump.next(timeout=0.1)
                    if time.monotonic() >= next_kill_check:  # a switch is read at most every 50 ms per stream
                        next_kill_check = time.monotonic() + 0.05
                        why = await run_in_threadpool(gateway.kills.blocked, model, key.id)
                        if why:
                            end["decision"] = "killed"
                            yield _error_frame(APIError(503, why, type_="service_unavailable", code="killed"))
                            return
                    if item is None:
                        continue
                    if isinstance(item, Exception):
                        raise item
                    if isinstance(item, Served):
                        break
                    text += item
                    piece = checker.feed(text)
                    if piece:
                        yield frames.piece(piece)
                    if checker.blocked is not None:
                        break
                served = item if isinstance(item, Served) else None
                rest = "" if served is None else checker.finish(served.completion.text)
                why = await run_in_threadpool(gateway.kills.blocked, model, key.id)
                if why:
                    end["decision"] = "killed"
                    yield _error_frame(APIError(503, why, type_="service_unavailable", code="killed"))
                    return
                if rest:
                    yield frames.piece(rest)
                blocked = checker.blocked is not None
                reason = "content_filter" if blocked or served is None else _finish(served.completion)
                end["decision"], end["finish_reason"] = ("content_filter" if blocked else "answered"), reason
                if served is not None:  # the model is done: the closing row is committed before the last frame
                    closed = True
                    await close(pump, checker, admitted, budget, end, start, model_start, messages)
                yield frames.closing(reason)
                yield "data: [DONE]\n\n"
            except Exception as exc:  # the model failed mid-stream: an OpenAI-shaped error frame ends it
                end["decision"] = "model_error"
                yield _error_frame(_model_error(exc))
            finally:
                # Otherwise (a guard or a switch ended it while the model generates, the model failed, the client
                # went away and this generator is being cancelled) a task settles, releases and writes the row.
                if not closed:
                    pump.cancel()  # nobody will read the rest: the model stops generating it
                    task = asyncio.get_running_loop().create_task(
                        close(pump, checker, admitted, budget, end, start, model_start, messages))
                    closing.add(task)
                    task.add_done_callback(closing.discard)

        response = StreamingResponse(events(), media_type="text/event-stream")
        response.headers.update({**admitted.headers, "x-tether-audit-seq": str(seq),
                                 "x-tether-overhead-ms": f"{1000 * (model_start - start):.2f}",
                                 **({"x-tether-version": record["version"]} if "version" in record else {})})
        return response

    async def close(pump: _Pump, checker: OutputStream, admitted: Admission, budget: bool, end: dict[str, Any],
                    start: float, model_start: float, messages: list[dict[str, str]]) -> None:
        served = await pump.done  # a stream ended early still counts the tokens the model went on to make
        used = 0 if served is None else served.prompt_tokens + served.completion_tokens
        end |= {"latency_ms": round(1000 * (time.perf_counter() - start), 3), "sent_chars": len(checker.sent),
                "guards": [{"on": "output", **v.as_dict()} for v in checker.verdicts],
                "stream_checks": checker.checks, "exposed_chars": checker.exposed, "diverged": checker.diverged}
        if served is not None:
            end |= {"prompt_tokens": served.prompt_tokens, "completion_tokens": served.completion_tokens}
        if "version" in end:
            end["refused"] = refusals.refuses(checker.sent)
        await finish(admitted, used, budget, end)
        metrics.observe(end["endpoint"], 200, end["decision"], time.perf_counter() - start,
                        model_start - start, end.get("prompt_tokens", 0), end.get("completion_tokens", 0))
        watched(end, messages, checker.sent)

    closing: set[asyncio.Task[None]] = set()  # streams' closing work in progress (kept from garbage collection)

    async def complete(backend: Backend, prompt: Any, settings: GenerationSettings) -> Served:
        try:
            served = await backend.complete(prompt, settings)
        except Exception as exc:  # the model raised: the client gets why, in OpenAI's shape, not a bare 500
            raise _model_error(exc) from None
        if served.completion.finish_reason == "error":
            raise APIError(502, f"the model failed: {served.completion.error or 'no completion'}", type_="api_error",
                           code="upstream_error")
        return served

    def usage(served: Served) -> dict[str, int]:
        return {"prompt_tokens": served.prompt_tokens, "completion_tokens": served.completion_tokens,
                "total_tokens": served.prompt_tokens + served.completion_tokens}

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        key = await run_in_threadpool(authenticate, request)
        served = [model] if key.scopes.allows_model(model) else []
        return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "tether"}
                                           for m in served]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Any:
        prompt = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        return await serve(request, body, body.max_completion_tokens or body.max_tokens, prompt, prompt,
                           _Frames("chat", model))

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await serve(request, body, body.max_tokens, body.prompt, [{"role": "user", "content": body.prompt}],
                           _Frames("text", model))

    @app.post("/v1/tools/code")
    async def run_code(body: CodeRequest, request: Request) -> JSONResponse:
        """Run a Python program in the sandbox (no network; bounded CPU, memory, processes, time; a throwaway
        directory); for keys with the ``code`` tool in their scopes. Counts against the key's requests per
        minute and requests in flight; the kill switches stop it like a model call."""
        start = time.perf_counter()
        record: dict[str, Any] = {"endpoint": "/v1/tools/code", "key": None, "model": None, "tool": "code",
                                  "code_sha256": hashlib.sha256(body.code.encode(errors="replace")).hexdigest()}
        admitted: Admission | None = None
        try:
            key = await run_in_threadpool(authenticate, request)
            record["key"] = key.id
            if "code" not in key.scopes.tools:
                raise APIError(403, f"API key {key.id} may not use the code tool", type_="permission_error",
                               code="tool_not_allowed")
            if sandbox is None:
                raise APIError(404, "the code tool is off on this server (tether serve --code-tool)",
                               code="tool_not_enabled")
            await run_in_threadpool(check_kill, key)
            admission = await admit(key, 0)
            if isinstance(admission, Refusal):
                raise APIError(429, admission.reason, type_="rate_limit_error", code="rate_limited",
                               headers={"Retry-After": str(max(1, round(admission.retry_after))), **admission.headers})
            admitted = admission
            try:
                async with slots:
                    result = await run_in_threadpool(sandbox.run, body.code, stdin=body.stdin, files=body.files)
            except UserError as exc:  # a file name that leaves /work; or the sandbox cannot isolate here
                status = 503 if isinstance(exc, SandboxUnavailableError) else 400
                raise APIError(status, str(exc), code="sandbox_unavailable" if status == 503 else "invalid_file"
                               ) from None
        except APIError as error:
            record |= {"status": error.status, "decision": error.code,
                       "latency_ms": round(1000 * (time.perf_counter() - start), 3)}
            await finish(admitted, 0, False, record)
            metrics.observe("/v1/tools/code", error.status, str(error.code), time.perf_counter() - start, None, 0, 0)
            raise
        record |= {"status": 200, "decision": "ran", "exit_code": result.exit_code, "signal": result.signal,
                   "timed_out": result.timed_out, "run_ms": round(1000 * result.seconds, 3),
                   "latency_ms": round(1000 * (time.perf_counter() - start), 3)}
        seq = await finish(admitted, 0, False, record)
        metrics.observe("/v1/tools/code", 200, "ran", time.perf_counter() - start, None, 0, 0)
        return JSONResponse({"object": "tool.result", "tool": "code", **result.as_dict()},
                            headers={**admission.headers, "x-tether-audit-seq": str(seq)})

    @app.post("/admin/kill")
    async def admin_kill(body: KillRequest, request: Request) -> dict[str, str]:
        """Set a kill switch (an admin key): ``{"target": "all" | "model:NAME" | "key:ID", "reason": ...}``."""
        key = await run_in_threadpool(admin, request)
        await run_in_threadpool(gateway.kills.kill, body.target, body.reason)
        await audit({"endpoint": "/admin/kill", "key": key.id, "status": 200,
                                                       "decision": "killed", "target": body.target,
                                                       "reason": body.reason})
        return {"killed": body.target}

    @app.post("/admin/revive")
    async def admin_revive(body: KillRequest, request: Request) -> dict[str, Any]:
        """Clear a kill switch (an admin key)."""
        key = await run_in_threadpool(admin, request)
        was = await run_in_threadpool(gateway.kills.revive, body.target)
        await audit({"endpoint": "/admin/revive", "key": key.id, "status": 200,
                                                       "decision": "revived", "target": body.target})
        return {"revived": body.target, "was_killed": was}

    def admin(request: Request) -> ApiKey:
        key = authenticate(request)
        if not key.scopes.admin:
            raise APIError(403, f"API key {key.id} is not an admin key", type_="permission_error", code="not_admin")
        return key

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/ready", response_model=None)
    async def ready() -> Any:
        """The process can serve: its store answers."""
        try:
            await run_in_threadpool(_ping, gateway.engine)
            if gateway.limiter.windows is not None:
                await run_in_threadpool(gateway.limiter.windows.client.ping)
        except Exception as exc:  # the database or Redis did not answer
            return JSONResponse({"status": "unavailable", "reason": type(exc).__name__}, status_code=503)
        return {"status": "ready"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics: requests by endpoint, status and decision; latency and overhead; tokens."""
        return Response(metrics.render(generator), media_type=CONTENT_TYPE_LATEST)

    return app


def _ping(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


class _Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tether_serve_requests", "Requests by endpoint, HTTP status and decision",
                                ["endpoint", "status", "decision"], registry=self.registry)
        self.latency = Histogram("tether_serve_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], registry=self.registry)
        self.overhead = Histogram("tether_serve_overhead_seconds", "Time an answered request spent outside the model",
                                  buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
                                  registry=self.registry)
        self.tokens = Counter("tether_serve_tokens", "Tokens of answered requests", ["kind"], registry=self.registry)
        self.batching = Gauge("tether_serve_model_calls", "Calls made to the model (a batch counts once)",
                              registry=self.registry)
        self.monitor_dropped = Counter("tether_serve_monitor_dropped", "Requests the monitor's full queue left "
                                       "unwatched", registry=self.registry)

    def observe(self, endpoint: str, status: int, decision: str, seconds: float, overhead: float | None,
                prompt_tokens: int, completion_tokens: int) -> None:
        """Count one finished request."""
        self.requests.labels(endpoint, str(status), decision).inc()
        self.latency.labels(endpoint).observe(seconds)
        if overhead is not None:
            self.overhead.observe(overhead)
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)

    def render(self, generator: Backend) -> bytes:
        """The exposition text."""
        self.batching.set(generator.calls)
        return generate_latest(self.registry)


def _by(item: ReviewItem) -> str:
    return "by its review's deadline (the default)" if item.state == "expired" else f"by reviewer {item.decided_by}"


def _finish(completion: Completion) -> str:
    return "length" if completion.finish_reason == "length" else "stop"


def _model_error(exc: Exception) -> APIError:
    return APIError(502, f"the model failed: {type(exc).__name__}: {str(exc)[:200]}", type_="api_error",
                    code="model_error")


def _error_frame(error: APIError) -> str:
    return f"data: {json.dumps(error.body())}\n\n"


class _Pump:
    """A backend's stream read into a queue by a task of its own: the reader can wait with a timeout (and look at
    the kill switches meanwhile) and can stop early, while the rest is still read for its token counts."""

    def __init__(self, first: str | Served, source: AsyncIterator[str | Served]) -> None:
        self.source = source
        self.queue: asyncio.Queue[str | Served | Exception] = asyncio.Queue()
        self.done: asyncio.Future[Served | None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.queue.put_nowait(first)
        if isinstance(first, Served):
            self.done.set_result(first)
            return
        self.task = asyncio.get_running_loop().create_task(self._read(source))

    def cancel(self) -> None:
        """Stop the generation: through the source's own ``cancel()`` where it has one (the in-process model,
        which then reports the tokens it made), else by dropping the read (an upstream's connection closes)."""
        cancel = getattr(self.source, "cancel", None)
        if cancel is not None:
            cancel()
        elif self.task is not None:
            self.task.cancel()

    async def _read(self, source: AsyncIterator[str | Served]) -> None:
        try:
            async for item in source:
                self.queue.put_nowait(item)
                if isinstance(item, Served):
                    self.done.set_result(item)
        except Exception as exc:
            self.queue.put_nowait(exc)
        finally:
            if not self.done.done():
                self.done.set_result(None)

    async def next(self, timeout: float) -> str | Served | Exception | None:
        """The next item, or None when none came within ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class _Frames:
    """A reply in OpenAI's shapes: whole (``chat.completion``, ``text_completion``) or as server-sent events
    (``chat.completion.chunk`` frames; ``text_completion`` frames)."""

    def __init__(self, kind: Literal["chat", "text"], model: str) -> None:
        self.kind, self.model = kind, model
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def whole(self, text: str, reason: str, usage: dict[str, int]) -> dict[str, Any]:
        """The reply in one body."""
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            kind = "chat.completion"
        else:
            choice, kind = {"index": 0, "text": text}, "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": [{**choice, "finish_reason": reason, "logprobs": None}], "usage": usage}

    def opening(self) -> str:
        """The first frame (chat: the assistant's role)."""
        return self._frame({"role": "assistant", "content": ""}, None) if self.kind == "chat" else ""

    def piece(self, text: str) -> str:
        """A frame carrying ``text``."""
        return self._frame({"content": text} if self.kind == "chat" else text, None)

    def closing(self, reason: str) -> str:
        """The frame carrying the finish reason."""
        return self._frame({} if self.kind == "chat" else "", reason)

    def _frame(self, delta: dict[str, Any] | str, finish: str | None) -> str:
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": delta}
            kind = "chat.completion.chunk"
        else:
            choice, kind = {"index": 0, "text": delta}, "text_completion"
        chunk = {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                 "choices": [{**choice, "finish_reason": finish, "logprobs": None}]}
        return f"data: {json.dumps(chunk)}\n\n"
