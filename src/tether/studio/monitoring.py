"""What the studio's monitor page shows: the windows and alarms the gateway's monitor stored
(:mod:`tether.serve.watch`), read back per scope and drawn as one small line chart per signal, alarms
marked where they were raised. The charts are SVG made here, so the page needs no script and no library."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tether.serve.store import MONITOR_ALARMS, MONITOR_WINDOWS

WIDTH, HEIGHT, PAD = 600.0, 110.0, 6.0


@dataclass
class Chart:
    """One signal's series: its polyline, alarm marks ``(x, y, z)``, and the values at the axis ends."""

    signal: str
    points: str
    marks: list[tuple[float, float, float]] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    last: float = 0.0
    windows: int = 0
    reference: float | None = None
    reference_y: float | None = None


def scopes(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every scope with windows, ``all`` first: its window count and alarm count."""
    with engine.connect() as conn:
        closed: dict[str, int] = {s: n for s, n in conn.execute(
            sa.select(MONITOR_WINDOWS.c.scope, sa.func.count()).group_by(MONITOR_WINDOWS.c.scope))}
        raised: dict[str, int] = {s: n for s, n in conn.execute(
            sa.select(MONITOR_ALARMS.c.scope, sa.func.count()).group_by(MONITOR_ALARMS.c.scope))}
    names = sorted(set(closed) | set(raised), key=lambda s: (s != "all", s))
    return [{"scope": s, "windows": closed.get(s, 0), "alarms": raised.get(s, 0)} for s in names]


def windows(engine: sa.Engine, scope: str, last: int = 200) -> list[dict[str, Any]]:
    """The scope's last ``last`` windows, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(MONITOR_WINDOWS).where(MONITOR_WINDOWS.c.scope == scope)
                            .order_by(MONITOR_WINDOWS.c.window.desc()).limit(last)).mappings().all()
    return [dict(r) for r in reversed(rows)]


def alarms(engine: sa.Engine, scope: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest alarms (of ``scope``, or every scope), newest first."""
    query = sa.select(MONITOR_ALARMS).order_by(MONITOR_ALARMS.c.id.desc()).limit(limit)
    if scope is not None:
        query = query.where(MONITOR_ALARMS.c.scope == scope)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def alarm(engine: sa.Engine, alarm_id: int) -> dict[str, Any] | None:
    """One alarm, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(MONITOR_ALARMS).where(MONITOR_ALARMS.c.id == alarm_id)).mappings().first()
    return None if row is None else dict(row)


def charts(rows: list[dict[str, Any]], raised: list[dict[str, Any]]) -> list[Chart]:
    """One chart per signal over ``rows`` (windows, oldest first), marking the ``raised`` alarms that fall in
    them; the reference drawn where an alarm recorded it."""
    if not rows:
        return []
    first = rows[0]["window"]
    span = max(1, rows[-1]["window"] - first)
    names = sorted({name for row in rows for name in row["means"]})
    out = []
    for name in names:
        series = [(row["window"], float(row["means"][name])) for row in rows if name in row["means"]]
        mine = [a for a in raised if a["signal"] == name and first <= a["window"] <= rows[-1]["window"]]
        reference = mine[0]["reference"] if mine else None
        values = [v for _, v in series] + ([reference] if reference is not None else [])
        low, high = min(values), max(values)
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5

        def x(window: int) -> float:
            return round(PAD + (WIDTH - 2 * PAD) * (window - first) / span, 1)

        def y(value: float, low: float = low, high: float = high) -> float:
            return round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - low) / (high - low), 1)

        at = dict(series)
        chart = Chart(name, " ".join(f"{x(w)},{y(v)}" for w, v in series), low=low, high=high, last=series[-1][1],
                      windows=len(series), reference=reference,
                      reference_y=y(reference) if reference is not None else None)
        chart.marks = [(x(a["window"]), y(at.get(a["window"], a["mean"])), a["z"]) for a in mine]
        out.append(chart)
    # Signals that alarmed first, then by name.
    out.sort(key=lambda c: (not c.marks, c.signal))
    return out
