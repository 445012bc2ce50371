"""Budgets: USD per day, week or month on a key, a project, or a user id within a project.

    definitions   the `budgets` table (storage/budgets.py), one per (project, kind, target, period),
                  set by `heliograph budgets set` and POST /api/v1/budgets; setting again replaces
                  the amount and keeps the id, so the period's spend carries on
    periods       UTC: a day from 00:00, an ISO week from Monday 00:00, a calendar month
    BudgetCache   the definitions indexed by project, reloaded in a thread every RELOAD_EVERY
                  seconds like the keys (auth.py): the proxy looks budgets up in memory only
    spend         enforced from a counter per (budget, period start) in the state backend,
                  charged by proxy/budgets.py; a counter the backend lacks (a fresh process on
                  in-process state, a flushed Redis) starts from the spend the store recorded for
                  the period, which the reload thread reads once per budget and period (`seed`).
                  Listings (CLI, API) show the recorded spend and how many calls were unpriced.

Nothing here imports the store: it is handed callables, so the proxy can use this module.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger("heliograph.budgets")

KINDS = ("key", "project", "user")
PERIODS = ("day", "week", "month")
ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}
MAX_USD = 1e9
RELOAD_EVERY = 5.0          # a budget set or deleted is enforced by every gateway within this many seconds
MICRO = 1e6                 # counters hold micro-USD

# (project id, target kind, start ms, end ms, targets) → {target: {"spend": USD, "unpriced_calls": n}}
SpendQuery = Callable[[str, str, int, int, Sequence[str]], Mapping[str, Mapping[str, Any]]]


class BudgetError(ValueError):
    """A budget that cannot be set as asked; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    project_id: str
    kind: str                   # key | project | user
    target: str                 # key id, project id or user id
    usd: float
    period: str                 # day | week | month
    created_at: int = 0         # epoch ms
    target_name: str = ""       # the key's name, for key budgets
    micro: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "micro", round(self.usd * MICRO, 3))

    def describe(self) -> str:
        """'the daily budget of $5.00 on key 'app' (key_…)', for messages."""
        if self.kind == "key":
            what = f"key '{self.target_name}' ({self.target})" if self.target_name else f"key {self.target}"
        elif self.kind == "user":
            what = f"user '{self.target}' in project {self.project_id}"
        else:
            what = f"project {self.project_id}"
        return f"the {ADJECTIVE[self.period]} budget of ${usd_text(self.usd)} on {what}"


def budget_from_row(row: Mapping[str, Any]) -> Budget:
    return Budget(str(row["id"]), str(row["project_id"]), str(row["target_kind"]), str(row["target"]),
                  float(row["usd"]), str(row["period"]), int(row.get("created_at") or 0),
                  str(row.get("target_name") or ""))


def usd_text(amount: float) -> str:
    """5 → '5.00', 0.0001 → '0.0001', 12.345678 → '12.345678'."""
    if round(amount, 2) == amount:
        return f"{amount:.2f}"
    return f"{amount:.6f}".rstrip("0")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- periods ----------------------------------------------------------------------------------------

def period_bounds(period: str, now: float) -> tuple[float, float]:
    """(start, end) in epoch seconds of the UTC period that contains `now`."""
    at = datetime.fromtimestamp(now, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = at, at + timedelta(days=1)
    elif period == "week":
        start = at - timedelta(days=at.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = at.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return start.timestamp(), end.timestamp()


class Periods:
    """period_bounds, computed again only when `now` leaves the period (the hot path's copy)."""

    def __init__(self) -> None:
        self._bounds: dict[str, tuple[float, float]] = {}

    def bounds(self, period: str, now: float) -> tuple[float, float]:
        found = self._bounds.get(period)
        if found is None or not found[0] <= now < found[1]:
            found = self._bounds[period] = period_bounds(period, now)
        return found


def counter_key(budget: Budget, start: float) -> str:
    return f"{budget.id}:{int(start)}"


# -- input, for the CLI and the API -----------------------------------------------------------------

def parse_usd(given: object) -> float:
    """An amount in USD, > 0: a number, or text such as '25' or '$0.50' (the CLI's)."""
    value = given
    if isinstance(value, str):
        try:
            value = float(value.strip().removeprefix("$"))
        except ValueError:
            raise BudgetError(f"usd must be an amount in USD such as 25 or 0.5, got {given!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BudgetError(f"usd must be a number, got {given!r}")
    if not 0 < value <= MAX_USD:
        raise BudgetError(f"usd must be more than 0 and at most {MAX_USD:,.0f}, got {given!r}")
    return float(value)


def parse_period(value: object) -> str:
    if value not in PERIODS:
        raise BudgetError(f"period must be one of {', '.join(PERIODS)}, got {value!r}")
    return str(value)


def resolve_key(keys: Sequence[Mapping[str, Any]], wanted: str) -> Mapping[str, Any]:
    """The active key with id `wanted`, else the one active key named `wanted`."""
    active = [k for k in keys if not k.get("revoked_at")]
    for key in active:
        if key["id"] == wanted:
            return key
    named = [k for k in active if k["name"] == wanted]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(k["id"] for k in named)
        raise BudgetError(f"{len(named)} active keys are named {wanted!r} ({ids}); give the key's id")
    raise BudgetError(f"no active key with id or name {wanted!r}")


# -- spend recorded in the store --------------------------------------------------------------------

def recorded_spend(budgets: Sequence[Budget], now: float, query: SpendQuery) -> dict[str, tuple[float, int]]:
    """Budget id → (USD recorded in its current period, unpriced calls); one query per
    (project, kind, period), not per budget."""
    groups: dict[tuple[str, str, str], list[Budget]] = defaultdict(list)
    for budget in budgets:
        groups[(budget.project_id, budget.kind, budget.period)].append(budget)
    found: dict[str, tuple[float, int]] = {}
    for (project, kind, period), members in groups.items():
        start, end = period_bounds(period, now)
        rows = query(project, kind, int(start * 1000), int(end * 1000), sorted({b.target for b in members}))
        for budget in members:
            row = rows.get(budget.target) or {}
            found[budget.id] = (float(row.get("spend") or 0.0), int(row.get("unpriced_calls") or 0))
    return found


def status(budget: Budget, spend: float, unpriced: int, now: float) -> dict[str, Any]:
    """A budget as the CLI and the API show it: the definition, and where its period stands."""
    start, end = period_bounds(budget.period, now)
    shown: dict[str, Any] = {"id": budget.id, "project_id": budget.project_id, "target": budget.kind}
    if budget.kind == "key":
        shown |= {"key": budget.target, "key_name": budget.target_name or None}
    elif budget.kind == "user":
        shown["user"] = budget.target
    return shown | {
        "usd": budget.usd, "period": budget.period, "created_at": iso(budget.created_at / 1000),
        "spend": round(spend, 9), "remaining": round(max(0.0, budget.usd - spend), 9),
        "period_start": iso(start), "resets_at": iso(end), "unpriced_calls": unpriced}


def statuses(rows: Sequence[Mapping[str, Any]], query: SpendQuery, now: float | None = None) -> list[dict[str, Any]]:
    at = time.time() if now is None else now
    budgets = [budget_from_row(row) for row in rows]
    spend = recorded_spend(budgets, at, query)
    return [status(b, *spend.get(b.id, (0.0, 0)), now=at) for b in budgets]


# -- the proxy's copy -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProjectBudgets:
    """One project's budgets, as the proxy looks them up."""
    project: tuple[Budget, ...] = ()
    keys: Mapping[str, tuple[Budget, ...]] = field(default_factory=dict)
    users: Mapping[str, tuple[Budget, ...]] = field(default_factory=dict)

    def applicable(self, key_id: str, user: Callable[[], str | None]) -> list[Budget]:
        """The project's, the key's and the user's budgets; `user` is only asked when the project
        has user budgets (it may parse the body)."""
        found = [*self.project, *self.keys.get(key_id, ())]
        if self.users and (user_id := user()) is not None:
            found += self.users.get(user_id, ())
        return found


def index(budgets: Sequence[Budget]) -> dict[str, ProjectBudgets]:
    grouped: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"project": [], "keys": defaultdict(list), "users": defaultdict(list)})
    for budget in budgets:
        entry = grouped[budget.project_id]
        if budget.kind == "project":
            entry["project"].append(budget)
        else:
            entry["keys" if budget.kind == "key" else "users"][budget.target].append(budget)
    return {project: ProjectBudgets(tuple(e["project"]), {k: tuple(v) for k, v in e["keys"].items()},
                                    {u: tuple(v) for u, v in e["users"].items()})
            for project, e in grouped.items()}


class BudgetCache:
    """Budget definitions by project, and the recorded spend that seeds a missing counter.

    `load` returns the `budgets` rows; `spend` (optional) is the store's recorded-spend query.
    Both run in a thread, never on the event loop and never per request. `now` is the clock of
    every period computation (injected by tests to cross a period boundary).
    """

    def __init__(self, load: Callable[[], Sequence[Mapping[str, Any]]], spend: SpendQuery | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self._load = load
        self._spend = spend
        self.now = now
        self.periods = Periods()
        self.projects: Mapping[str, ProjectBudgets] = {}
        self._seeds: Mapping[tuple[str, int], float] = {}      # (budget id, period start) → micro-USD

    def seed(self, budget: Budget, start: float) -> float:
        return self._seeds.get((budget.id, int(start)), 0.0)

    async def reload(self) -> None:
        self.projects, self._seeds = await asyncio.to_thread(self._load_all, self._seeds)

    def _load_all(self, known: Mapping[tuple[str, int], float]
                  ) -> tuple[dict[str, ProjectBudgets], dict[tuple[str, int], float]]:
        budgets = [budget_from_row(row) for row in self._load()]
        now = self.now()
        current = {b.id: (b.id, int(period_bounds(b.period, now)[0])) for b in budgets}
        seeds = {slot: known[slot] for slot in current.values() if slot in known}
        missing = [b for b in budgets if current[b.id] not in seeds]
        if missing and self._spend is not None:
            try:
                spent = recorded_spend(missing, now, self._spend)
            except Exception as exc:  # the store may be locked or down: try again at the next reload
                log.warning("could not read the recorded spend of %d budgets: %s", len(missing), exc)
            else:
                seeds |= {current[b.id]: spent[b.id][0] * MICRO for b in missing}
        return index(budgets), seeds

    async def run_reloads(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            try:
                await self.reload()
            except Exception as exc:  # the store may be locked or down; keep the budgets we have
                log.warning("could not reload budgets: %s", exc)
