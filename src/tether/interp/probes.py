"""Linear probes on captured activations, with the baseline beside them.

A probe reads a site's activations (:mod:`tether.interp.capture`) and scores how much of a property each row
has. Two kinds, always fitted together so neither is reported alone:

- :func:`difference_of_means`: the direction from the negatives' mean to the positives' mean; a row's score
  is its projection on it (no fitting beyond two means: the baseline that often wins);
- :func:`logistic_probe`: L2-regularised logistic regression on standardised activations.

:class:`ProbeEnsemble` averages several probes (one per layer, say), each score standardised on the rows the
probes were fitted on, so no layer's scale dominates.

:func:`probe_metrics` gives AUROC with a bootstrap interval, and the recall at the threshold that lets
through ``fpr`` (1% by default) of a control set of negatives, the figure a probe used as a monitor or a
guard is judged by. A :class:`Probe` is plain numbers (a direction, a bias, the standardisation) named by
its site, saved as JSON: it applies to any model whose site has its width.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np


@dataclass
class Probe:
    """``score(x) = w · (x − mean) / scale + bias`` at ``site``; ``kind`` says how ``w`` was found."""

    site: str
    kind: Literal["difference-of-means", "logistic"]
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def scores(self, activations: Any) -> np.ndarray:
        """One score per row of ``activations`` (rows × width).

        Raises:
            ValueError: the rows are not as wide as the probe.
        """
        x = np.asarray(activations, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.weights):
            raise ValueError(f"probe at {self.site} reads rows of width {len(self.weights)}, not {x.shape}")
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def save(self, path: str | Path) -> Path:
        """The probe as JSON."""
        out = Path(path)
        data = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}
        out.write_text(json.dumps(data) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Probe:
        """What :meth:`save` wrote."""
        data = json.loads(Path(path).read_text())
        return cls(data["site"], data["kind"], np.asarray(data["weights"]), float(data["bias"]),
                   np.asarray(data["mean"]), np.asarray(data["scale"]))


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    scale = x.std(0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def difference_of_means(site: str, activations: Any, labels: Any) -> Probe:
    """The mean of the positives minus the mean of the negatives (in standardised units), centred so that
    the midpoint between the two means scores 0.

    Raises:
        ValueError: no positive or no negative rows.
    """
    x, y = np.asarray(activations, dtype=np.float64), np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise ValueError("a probe needs positive and negative rows")
    mean, scale = _standardise(x)
    z = (x - mean) / scale
    pos, neg = z[y].mean(0), z[~y].mean(0)
    direction = pos - neg
    return Probe(site, "difference-of-means", direction, float(-direction @ (pos + neg) / 2), mean, scale)


def logistic_probe(site: str, activations: Any, labels: Any, *, c: float = 1.0, seed: int = 0) -> Probe:
    """Logistic regression (scikit-learn, L2 with inverse strength ``c``) on standardised activations."""
    from sklearn.linear_model import LogisticRegression

    x, y = np.asarray(activations, dtype=np.float64), np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise ValueError("a probe needs positive and negative rows")
    mean, scale = _standardise(x)
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((x - mean) / scale, y)
    return Probe(site, "logistic", model.coef_[0].astype(np.float64), float(model.intercept_[0]), mean, scale)


@dataclass
class ProbeEnsemble:
    """The mean of its probes' scores, each standardised by its mean and spread on the fitting rows."""

    probes: list[Probe]
    centre: np.ndarray
    spread: np.ndarray

    @classmethod
    def fit(cls, probes: list[Probe], activations: dict[str, Any]) -> ProbeEnsemble:
        """Standardise each probe on its site's rows in ``activations`` (the rows it was fitted on).

        Raises:
            ValueError: no probes, or two probes at one site.
        """
        if not probes or len({p.site for p in probes}) != len(probes):
            raise ValueError("an ensemble needs at least one probe and one probe per site")
        raw = np.stack([p.scores(activations[p.site]) for p in probes])
        spread = raw.std(1)
        return cls(probes, raw.mean(1), np.where(spread > 1e-12, spread, 1.0))

    @property
    def sites(self) -> list[str]:
        """The sites it reads."""
        return [p.site for p in self.probes]

    def scores(self, activations: dict[str, Any]) -> np.ndarray:
        """One score per row: ``activations`` maps each of :attr:`sites` to its rows (the same rows at each)."""
        missing = [site for site in self.sites if site not in activations]
        if missing:
            raise ValueError(f"the ensemble reads {', '.join(missing)}: no activations given there")
        raw = np.stack([p.scores(activations[p.site]) for p in self.probes])
        return ((raw - self.centre[:, None]) / self.spread[:, None]).mean(0)


def recall_at_fpr(positive_scores: Any, control_scores: Any, fpr: float = 0.01) -> tuple[float, float]:
    """The recall on ``positive_scores`` at the threshold that flags at most ``fpr`` of ``control_scores``
    (the control set's ``1 − fpr`` quantile, taken from above: a tie at the threshold is not flagged), and
    that threshold."""
    control = np.sort(np.asarray(control_scores, dtype=np.float64))
    allowed = int(np.floor(fpr * len(control)))  # this many controls may score above the threshold
    threshold = control[len(control) - allowed - 1] if allowed < len(control) else -np.inf
    return float((np.asarray(positive_scores) > threshold).mean()), float(threshold)


def probe_metrics(scores: Any, labels: Any, *, control: Any | None = None, fpr: float = 0.01,
                  resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUROC with a 95% bootstrap interval on ``scores`` against ``labels``; recall at ``fpr`` on the control
    set's scores (``control``, default: the negatives among ``scores``)."""
    from sklearn.metrics import roc_auc_score

    from tether.core.stats import auroc_rows

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    auroc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    picks = [pick for pick in (rng.integers(0, len(s), len(s)) for _ in range(resamples))
             if y[pick].any() and not y[pick].all()]
    # The resamples' AUROCs by ranks, a block at a time (a thousand calls to roc_auc_score cost a second).
    blocks = np.array_split(np.array(picks), max(1, len(picks) // 128)) if picks else []
    draws = np.concatenate([auroc_rows(s[block], y[block]) for block in blocks]) if picks else np.empty(0)
    low, high = (np.quantile(draws, [0.025, 0.975]) if len(draws) else (auroc, auroc))
    negatives = s[~y] if control is None else np.asarray(control, dtype=np.float64)
    recall, threshold = recall_at_fpr(s[y], negatives, fpr)
    return {"auroc": round(auroc, 4), "auroc_low": round(float(low), 4), "auroc_high": round(float(high), 4),
            f"recall_at_{fpr:g}_fpr": round(recall, 4), "threshold": threshold, "positives": int(y.sum()),
            "negatives": int((~y).sum()), "control": len(negatives)}
