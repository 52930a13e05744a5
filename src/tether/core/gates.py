"""Pass/fail gates on a run's metrics, for CI: ``--fail-above asr=0.05``, ``--fail-below NAME=VALUE``.

A gate compares one metric's point value with a bar; a run whose metrics cross any bar exits 1
(the model failed), distinct from exit 2 (the user's input was wrong: an unknown metric name,
a malformed gate). :func:`junit_xml` writes the gates as a JUnit XML report, the format CI
systems (Jenkins, GitLab, GitHub Actions' test reporters) read: one test case per gate.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tether.core.errors import UserError


@dataclass(frozen=True)
class Gate:
    """``metric`` must not be above (``direction='above'``) or below ``bar``."""

    metric: str
    direction: Literal["above", "below"]
    bar: float

    def describe(self) -> str:
        """``asr.all <= 0.05``-style text of what passes."""
        return f"{self.metric} {'<=' if self.direction == 'above' else '>='} {self.bar:g}"


@dataclass(frozen=True)
class GateResult:
    """A gate and the value it saw."""

    gate: Gate
    value: float
    n: int | None

    @property
    def passed(self) -> bool:
        """Whether the value is on the right side of the bar (equal passes)."""
        return self.value <= self.gate.bar if self.gate.direction == "above" else self.value >= self.gate.bar

    def describe(self) -> str:
        """One line: PASS or FAIL, the metric's value and the bar."""
        verdict = "PASS" if self.passed else "FAIL"
        sign = (">" if not self.passed else "<=") if self.gate.direction == "above" else (
            "<" if not self.passed else ">=")
        return f"{verdict} {self.gate.metric} = {self.value:.4g} {sign} {self.gate.bar:g}" + (
            f" (n={self.n})" if self.n is not None else "")


def parse_gates(above: Sequence[str] = (), below: Sequence[str] = (), *,
                aliases: Mapping[str, str] | None = None) -> list[Gate]:
    """Gates from ``NAME=VALUE`` specs (comma-separated or repeated); ``aliases`` map short names
    (``asr`` -> ``asr.all``).

    Raises:
        UserError: a spec that is not ``NAME=VALUE`` with a finite number.
    """
    gates = []
    for direction, specs in (("above", above), ("below", below)):
        for spec in (part.strip() for chunk in specs for part in chunk.split(",") if part.strip()):
            name, sep, value = spec.partition("=")
            try:
                bar = float(value)
            except ValueError:
                bar = math.nan
            if not sep or not name.strip() or not math.isfinite(bar):
                raise UserError(f"--fail-{direction} {spec!r}: expected NAME=VALUE with a number (e.g. asr=0.05)")
            name = name.strip()
            gates.append(Gate((aliases or {}).get(name, name), direction, bar))  # type: ignore[arg-type]
    return gates


def check_gates(gates: Sequence[Gate], metrics: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
    """Each gate against ``metrics`` (``{name: {"value": ..., "n": ...}}``).

    Raises:
        UserError: a gate names a metric the run does not have (the known ones listed).
    """
    results = []
    for gate in gates:
        if gate.metric not in metrics:
            known = ", ".join(sorted(metrics)[:40])
            raise UserError(f"--fail-{gate.direction}: no metric {gate.metric!r} in this run (metrics: {known})")
        m = metrics[gate.metric]
        results.append(GateResult(gate, float(m["value"]), m.get("n")))
    return results


def junit_xml(results: Sequence[GateResult], path: Path, *, suite: str, metrics: Mapping[str, Mapping[str, Any]],
              seconds: float | None = None) -> Path:
    """Write ``results`` as a JUnit XML test suite (a failing gate is a failed test case, with its line as
    the message); every metric's value goes in the suite's properties."""
    failures = sum(not r.passed for r in results)
    root = ET.Element("testsuites", tests=str(len(results)), failures=str(failures))
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=str(failures), errors="0",
                         skipped="0", time=f"{seconds or 0.0:.3f}")
    properties = ET.SubElement(node, "properties")
    for name, m in sorted(metrics.items()):
        ET.SubElement(properties, "property", name=name, value=f"{float(m['value']):.6g}")
    for r in results:
        case = ET.SubElement(node, "testcase", classname=suite, name=r.gate.describe(), time="0")
        if not r.passed:
            ET.SubElement(case, "failure", message=r.describe(), type="threshold").text = r.describe()
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
