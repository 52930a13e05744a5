"""The offline half of a rollout's gate (``tether rollout start``): the canary's evaluation against the current
version's, paired on the same prompts, its red-team run, and the capability rules, read from their run
directories and judged by :mod:`tether.serve.rollout`'s pure functions. (Here, above both the evaluations and
the gateway, because it reads the one for the other.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.core.errors import UserError
from tether.evals.compare import compare, load_run
from tether.serve.rollout import Check, GateChecks, RolloutConfig, capability_safeguards, judge_offline


def offline_gate(cfg: RolloutConfig) -> tuple[GateChecks, list[str]]:
    """The offline gate and capability rules for ``cfg``, read from its eval (and red-team) run directories;
    the checks, and the safeguards required.

    Raises:
        UserError: a run directory cannot be read, or the two eval runs cannot be paired.
    """
    checks: list[Check] = []
    metrics: dict[str, Any] = {}
    result = GateChecks([])
    if cfg.offline is not None:
        redteam = _read_json(Path(cfg.offline.redteam) / "metrics.json") if cfg.offline.redteam else None
        comparison = compare([cfg.offline.baseline, cfg.offline.candidate], labels=["current", "canary"])
        result = judge_offline(cfg.offline, comparison, redteam)
        metrics = dict(load_run(cfg.offline.candidate)[0]["metrics"])
        if redteam is not None:
            metrics |= {f"redteam.{k}": v for k, v in redteam.get("metrics", {}).items()}
    elif cfg.capabilities:
        raise UserError("capabilities: the rules read the canary's evaluation; give offline.candidate")
    checks, needed = capability_safeguards(cfg.capabilities, metrics)
    return GateChecks(result.checks + checks), needed


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: {exc}") from None
