"""Concurrent requests share ``generate`` calls, and streamed requests get their text as it is sampled.

One worker thread owns the model. It takes the requests waiting (after a short window for more to
arrive, up to ``max_batch``), groups those with the same generation settings, and completes each group
with one ``generate`` call: the batched sampler then serves them together instead of one after another.
A streamed request's tokens are decoded on the worker as they are sampled and handed to the event loop
piece by piece; a generator that cannot report tokens as it goes streams its whole reply at the end.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tether.data.records import Prompt
from tether.models.generation import Completion, GenerationSettings, Generator


@dataclass(frozen=True)
class Served:
    """A request's completion, and its prompt's and reply's lengths in tokens (0 where unknown)."""

    completion: Completion
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    """What the gateway sends requests to: a model in this process (:class:`BatchingGenerator`) or an upstream
    server (:class:`tether.serve.upstream.UpstreamBackend`)."""

    calls: int  # calls made to the model

    def count_tokens(self, prompt: Prompt) -> int | None:
        """``prompt``'s length in tokens as the model sees it, before the call (None: cannot say)."""
        ...

    async def complete(self, prompt: Prompt, settings: GenerationSettings) -> Served:
        """The model's reply."""
        ...

    def stream(self, prompt: Prompt, settings: GenerationSettings) -> AsyncIterator[str | Served]:
        """The model's reply as it is produced: pieces of text, then the whole reply as :class:`Served` (its
        text is the reply; the pieces are its prefix as far as they go). The iterator may have a ``cancel()``
        that stops the generation early (the in-process model's has)."""
        ...

    def close(self) -> None:
        """Release what the backend holds."""
        ...


T = TypeVar("T")


def gather(waiting: queue.Queue[T | None] | queue.SimpleQueue[T | None], first: T, limit: int) -> tuple[list[T], bool]:
    """``first`` and what else is waiting, up to ``limit`` items, without blocking; and whether the stop
    marker (None) was among them (the worker ends after this batch)."""
    batch = [first]
    while len(batch) < limit:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            return batch, False
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


class IncrementalDecoder:
    """Text of a growing token sequence, piece by piece, at a cost per token that does not grow with the text:
    each new token is decoded with the tokens of the last piece before it as context (so a tokenizer that
    drops or adds a space at a sequence's start decodes as it would in the whole), and a piece is held while
    it ends inside a character (a byte-level token that is half of one decodes to U+FFFD)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.text = tokenizer, ""
        self.ids: list[int] = []
        self._context = 0  # where the tokens of the last piece given begin
        self._read = 0     # where the tokens not yet given as text begin

    def push(self, token: int) -> str:
        """The text ``token`` adds ('' for now when it ends mid-character)."""
        self.ids.append(token)
        before = self._decode(self.ids[self._context:self._read])
        after = self._decode(self.ids[self._context:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        piece = after[len(before):]
        self._context, self._read = self._read, len(self.ids)
        self.text += piece
        return piece

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""


class _CancelledError(Exception):
    """Raised from the sampler's token callback when every request of its call was cancelled."""


@dataclass
class _Request:
    prompt: Prompt
    settings: GenerationSettings
    future: Future[Served] = field(default_factory=Future)
    pieces: Callable[[str], None] | None = None  # a streamed request: called on the worker with each piece
    decoder: IncrementalDecoder | None = None
    cancelled: bool = False  # its client is gone or a switch ended it: generation stops once all its call's are


class BatchingGenerator:
    """A :class:`~tether.models.generation.Generator` shared by concurrent callers (see the module)."""

    def __init__(self, generator: Generator, *, max_batch: int = 32, window_s: float = 0.005) -> None:
        self.generator, self.max_batch, self.window_s = generator, max_batch, window_s
        self.calls = 0  # generate() calls made
        self.served = 0  # requests completed
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        # A tokenizer of its own to count prompts on the request path: a fast tokenizer must not be used from
        # two threads at once, and the worker's is busy generating.
        tokenizer = getattr(generator, "tokenizer", None)
        self._counter = copy.deepcopy(tokenizer) if tokenizer is not None else None
        self._count_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="tether-serve-batcher", daemon=True)
        self._worker.start()

    def submit(self, prompt: Prompt, settings: GenerationSettings) -> Future[Served]:
        """A future of ``prompt``'s completion."""
        request = _Request(prompt, settings)
        self._queue.put(request)
        return request.future

    async def complete(self, prompt: Prompt, settings: GenerationSettings) -> Served:
        """``prompt``'s completion, awaited (the worker batches it with the requests around it)."""
        return await asyncio.wrap_future(self.submit(prompt, settings))

    def stream(self, prompt: Prompt, settings: GenerationSettings) -> TokenStream:
        """``prompt``'s completion as it is sampled: pieces of text, then the :class:`Served` reply; the stream's
        ``cancel()`` stops its generation (once no other request shares the call)."""
        return TokenStream(self, prompt, settings)

    def count_tokens(self, prompt: Prompt) -> int | None:
        """``prompt``'s length in tokens as the model will see it (None: this generator has no tokenizer)."""
        if self._counter is None:
            return None
        from tether.models.chat import encode_prompts

        with self._count_lock:
            return len(encode_prompts(self._counter, [prompt])[0])

    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[Completion]:
        """Complete ``prompts`` through the shared worker (blocking)."""
        return [f.result().completion for f in [self.submit(p, settings) for p in prompts]]

    def close(self) -> None:
        """Stop the worker once the requests already queued are done."""
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(self.window_s)  # let the requests that arrive together be served together
            batch, stop = gather(self._queue, first, self.max_batch)
            groups: dict[str, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.settings.model_dump_json(), []).append(request)
            for requests in groups.values():
                self._complete(requests)
            if stop:
                return

    def _complete(self, requests: list[_Request]) -> None:
        prompts = [r.prompt for r in requests]
        try:
            self.calls += 1
            streamed = [r for r in requests if r.pieces is not None]
            if streamed and self._reports_tokens():
                for r in streamed:
                    r.decoder = IncrementalDecoder(self.generator.tokenizer)  # type: ignore[attr-defined]
                completions = self.generator.generate(prompts, requests[0].settings,  # type: ignore[call-arg]
                                                      on_token=lambda i, token: self._piece(requests, i, token))
            else:
                completions = self.generator.generate(prompts, requests[0].settings)
            # Counted here, on the worker: a fast tokenizer must not be used from two threads at once.
            encode = getattr(self.generator, "encode", None)
            lengths = [len(ids) for ids in encode(prompts)] if encode else [0] * len(prompts)
        except _CancelledError:  # every request of the call was cancelled: each gets what was generated so far
            self._cancelled(requests)
            return
        except Exception as exc:  # every waiting request gets the error; the worker keeps serving
            for r in requests:
                r.future.set_exception(exc)
            return
        self.served += len(requests)
        for r, completion, length in zip(requests, completions, lengths, strict=True):
            r.future.set_result(Served(completion, length, len(completion.token_ids)))

    def _reports_tokens(self) -> bool:
        # A generator streams when its generate() takes on_token and it has a tokenizer to decode with.
        try:
            takes = "on_token" in inspect.signature(self.generator.generate).parameters
        except (TypeError, ValueError):
            return False
        return takes and getattr(self.generator, "tokenizer", None) is not None

    @staticmethod
    def _piece(requests: list[_Request], index: int, token: int) -> None:
        request = requests[index]
        if request.cancelled and all(r.cancelled for r in requests):
            raise _CancelledError  # stops the generate call: nobody is waiting for its tokens
        if request.pieces is None or request.decoder is None:
            return  # a request of the batch that is not streamed
        piece = request.decoder.push(token)
        if piece:
            request.pieces(piece)

    def _cancelled(self, requests: list[_Request]) -> None:
        encode = getattr(self.generator, "encode", None)
        lengths = [len(ids) for ids in encode([r.prompt for r in requests])] if encode else [0] * len(requests)
        for r, length in zip(requests, lengths, strict=True):
            ids = r.decoder.ids if r.decoder else []
            text = r.decoder.text if r.decoder else ""
            r.future.set_result(Served(Completion(text, list(ids), finish_reason="error", error="cancelled"), length,
                                       len(ids)))


class TokenStream:
    """A streamed request of a :class:`BatchingGenerator`: an async iterator of text pieces, then the
    :class:`Served` reply; :meth:`cancel` asks the worker to stop generating it."""

    def __init__(self, owner: BatchingGenerator, prompt: Prompt, settings: GenerationSettings) -> None:
        loop = asyncio.get_running_loop()
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def hand_over(piece: str | None) -> None:
            loop.call_soon_threadsafe(self._pieces.put_nowait, piece)

        self._request = _Request(prompt, settings, pieces=hand_over)
        # Pieces and the end are queued from the worker in the order they happen.
        self._request.future.add_done_callback(lambda _: hand_over(None))
        self._done = False
        owner._queue.put(self._request)

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> str | Served:
        if self._done:
            raise StopAsyncIteration
        piece = await self._pieces.get()
        if piece is not None:
            return piece
        self._done = True
        return self._request.future.result()  # the model's error, if it failed, raises here

    def cancel(self) -> None:
        """Stop generating this request (at its next token, once every request sharing its call is cancelled)."""
        self._request.cancelled = True
