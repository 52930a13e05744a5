"""From many annotators' labels to one label per item: majority vote, Dawid–Skene, Bradley–Terry.

Annotations come in long form, ``(item, annotator, label)``, as :mod:`tether.core.agreement` reads them.

- :func:`majority`: the most frequent label per item (ties broken at random, seeded).
- :func:`dawid_skene`: each annotator has a confusion matrix (how often they say ``l`` when the truth is
  ``k``); EM finds the matrices, the label priors and each item's posterior together (Dawid and Skene
  1979), starting from the vote shares. A careful annotator outvotes two careless ones, and one who
  systematically swaps labels is read backwards.
- :func:`bradley_terry`: comparisons ``(winner, loser, annotator)`` -> a strength per option (Bradley and
  Terry 1952); with ``reliability``, each annotator also has a probability of reporting their real
  preference rather than its opposite, fitted jointly, so an unreliable annotator's comparisons count
  for less (a "noisy BT", as crowd-kit's NoisyBT does).
- :func:`by_group`: any of these per group of annotators, and the items where the groups decide
  differently: whose preferences a label is.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

Annotation = tuple[Hashable, Hashable, Hashable]  # (item, annotator, label)
Comparison = tuple[Hashable, Hashable, Hashable]  # (winner, loser, annotator)


def majority(annotations: Sequence[Annotation], *, seed: int = 0) -> dict[Hashable, Hashable]:
    """The most frequent label per item; a tie is broken at random (seeded), never by label order."""
    votes: dict[Hashable, Counter[Hashable]] = defaultdict(Counter)
    for item, _, label in annotations:
        votes[item][label] += 1
    rng = random.Random(seed)
    out = {}
    for item, counts in votes.items():
        top = max(counts.values())
        out[item] = rng.choice(sorted((label for label, c in counts.items() if c == top), key=repr))
    return out


@dataclass(frozen=True)
class LabelModel:
    """What :func:`dawid_skene` found: each item's label and posterior, each annotator's confusion matrix
    (``confusion[annotator][truth][said]``), the label priors, and the EM iterations it took."""

    labels: dict[Hashable, Hashable]
    posteriors: dict[Hashable, dict[Hashable, float]]
    confusion: dict[Hashable, dict[Hashable, dict[Hashable, float]]]
    priors: dict[Hashable, float]
    iterations: int

    def accuracy(self, annotator: Hashable) -> float:
        """The annotator's estimated chance of giving the true label (prior-weighted diagonal)."""
        matrix = self.confusion[annotator]
        return sum(self.priors[k] * matrix[k][k] for k in self.priors)


def dawid_skene(annotations: Sequence[Annotation], *, iterations: int = 100, tolerance: float = 1e-6,
                smoothing: float = 0.01) -> LabelModel:
    """Dawid–Skene by EM (see the module); ``smoothing`` is added to every confusion count so an annotator
    seen on few items is not certain of anything."""
    if not annotations:
        raise ValueError("dawid_skene needs annotations")
    classes = sorted({label for _, _, label in annotations}, key=repr)
    by_item: dict[Hashable, list[tuple[Hashable, Hashable]]] = defaultdict(list)
    for item, annotator, label in annotations:
        by_item[item].append((annotator, label))
    annotators = sorted({a for _, a, _ in annotations}, key=repr)
    # Start from the vote shares (soft majority).
    posterior = {item: {k: sum(label == k for _, label in votes) / len(votes) for k in classes}
                 for item, votes in by_item.items()}
    done = 0
    while done < iterations:
        done += 1
        priors = {k: sum(p[k] for p in posterior.values()) / len(posterior) for k in classes}
        counts = {a: {k: dict.fromkeys(classes, smoothing) for k in classes} for a in annotators}
        for item, votes in by_item.items():
            for annotator, label in votes:
                for k in classes:
                    counts[annotator][k][label] += posterior[item][k]
        confusion = {a: {k: {said: c / sum(row.values()) for said, c in row.items()} for k, row in rows.items()}
                     for a, rows in counts.items()}
        change = 0.0
        for item, votes in by_item.items():
            logs = {k: math.log(max(priors[k], 1e-12))
                    + sum(math.log(confusion[a][k][label]) for a, label in votes) for k in classes}
            top = max(logs.values())
            weights = {k: math.exp(v - top) for k, v in logs.items()}
            total = sum(weights.values())
            new = {k: w / total for k, w in weights.items()}
            change = max(change, max(abs(new[k] - posterior[item][k]) for k in classes))
            posterior[item] = new
        if change < tolerance:
            break
    labels = {item: max(p, key=lambda k: (p[k], -classes.index(k))) for item, p in posterior.items()}
    return LabelModel(labels, posterior, confusion, priors, done)


@dataclass(frozen=True)
class Strengths:
    """What :func:`bradley_terry` found: a strength per option (log-odds scale, mean 0) and, with
    reliability, each annotator's probability of reporting their real preference."""

    scores: dict[Hashable, float]
    reliability: dict[Hashable, float]

    def prefers(self, first: Hashable, second: Hashable) -> bool:
        """Whether ``first`` is the stronger of the two."""
        return self.scores[first] > self.scores[second]


def bradley_terry(comparisons: Sequence[Comparison], *, reliability: bool = True, steps: int = 300,
                  l2: float = 0.01, seed: int = 0) -> Strengths:
    """Bradley–Terry strengths from ``(winner, loser, annotator)`` comparisons by maximum likelihood (with a
    small ``l2`` pull towards 0, which keeps options that always win finite); with ``reliability``, the
    probability a judgement reports the annotator's real preference, per annotator, fitted jointly (started
    at 0.9, which also picks the reading where most annotators are better than chance)."""
    import torch

    if not comparisons:
        raise ValueError("bradley_terry needs comparisons")
    torch.manual_seed(seed)
    options = sorted({o for w, lose, _ in comparisons for o in (w, lose)}, key=repr)
    annotators = sorted({a for _, _, a in comparisons}, key=repr)
    index = {o: i for i, o in enumerate(options)}
    who = {a: i for i, a in enumerate(annotators)}
    winners = torch.tensor([index[w] for w, _, _ in comparisons])
    losers = torch.tensor([index[lose] for _, lose, _ in comparisons])
    judges = torch.tensor([who[a] for _, _, a in comparisons])
    # float64: the gradient's scatter-add runs in parallel in no fixed order; in double precision that
    # order no longer decides between two near-tied options, so the same comparisons give the same ranking.
    strength = torch.zeros(len(options), dtype=torch.float64, requires_grad=True)
    trust = torch.full((len(annotators),), math.log(0.9 / 0.1), dtype=torch.float64, requires_grad=True)
    parameters = [strength, trust] if reliability else [strength]
    optimizer = torch.optim.LBFGS(parameters, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        p_real = torch.sigmoid(strength[winners] - strength[losers])
        if reliability:
            rho = torch.sigmoid(trust[judges])
            p_said = rho * p_real + (1 - rho) * (1 - p_real)
        else:
            p_said = p_real
        value = -torch.log(p_said.clamp_min(1e-12)).sum() + l2 * strength.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    scores = (strength - strength.mean()).detach().tolist()
    rho = torch.sigmoid(trust).detach().tolist() if reliability else [1.0] * len(annotators)
    return Strengths(dict(zip(options, scores, strict=True)), dict(zip(annotators, rho, strict=True)))


def by_group(annotations: Sequence[Annotation], groups: Mapping[Hashable, Hashable],
             method: Callable[[Sequence[Annotation]], Mapping[Hashable, Hashable]] = majority,
             ) -> tuple[dict[Hashable, dict[Hashable, Hashable]], dict[Hashable, dict[Hashable, Hashable]]]:
    """``method``'s labels per group of annotators (``groups``: annotator -> group; annotators in no group
    left out), and the items two or more groups labelled where they decide differently: ``{item: {group:
    label}}``."""
    members: dict[Hashable, list[Annotation]] = defaultdict(list)
    for item, annotator, label in annotations:
        if annotator in groups:
            members[groups[annotator]].append((item, annotator, label))
    decided = {group: dict(method(rows)) for group, rows in members.items()}
    disputed: dict[Hashable, dict[Hashable, Hashable]] = {}
    for item in {i for labels in decided.values() for i in labels}:
        verdicts = {g: labels[item] for g, labels in decided.items() if item in labels}
        if len(set(map(repr, verdicts.values()))) > 1:
            disputed[item] = verdicts
    return decided, disputed
