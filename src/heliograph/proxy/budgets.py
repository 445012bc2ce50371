"""Budgets on the hot path: a call whose budget is spent is refused before the upstream; the
real cost of the others is charged after the answer.

`check` costs one dictionary lookup when the key's project has no budget. Otherwise it gathers the
budgets that apply (the project's, the key's, and the user's: Helicone-User-Id, else the body's
`user`, read only when the project has user budgets), reads their spend in the current period in
one state round trip, refuses with BudgetExceeded (429) when one is spent, and adds
`Helicone-Budget-Remaining`: USD left, before this call, of the tightest budget.

`charge` runs after the answer, off the client's path: the call's cost as the recorder prices it
(a cache hit never gets here; an unpriced call counts $0: the store counts those), added to every
counter of the call in one round trip. Check and charge are apart, so calls in flight together
may overshoot a budget by what they cost. A failing state backend never fails a call (fail-open).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson

from ..auth import KeyInfo
from ..budgets import MICRO, BudgetCache, counter_key, iso
from ..errors import BudgetExceeded
from ..pricing import PriceOverride, billable, price
from ..recording.process import decode_body
from ..recording.record import RawRecord
from ..state import BudgetCharge, BudgetCounters, StateUnavailable
from ..usage import extract_usage
from .limiting import user_of

log = logging.getLogger("heliograph.budgets")

EXPIRY_GRACE = 60.0         # seconds a counter outlives its period: a late charge finds it


@dataclass(slots=True)
class BudgetPlan:
    """The counters a call admitted under budgets charges once answered."""
    keys: list[str]
    seeds: list[float]          # micro-USD a missing counter starts from
    expires: list[float]        # epoch seconds


async def check(cache: BudgetCache, counters: BudgetCounters, key: KeyInfo, helicone: Mapping[str, str],
                body: bytes, headers_out: list[tuple[bytes, bytes]]) -> BudgetPlan | None:
    """The call's budget plan, None when no budget applies; BudgetExceeded when one is spent."""
    project = cache.projects.get(key.project_id)
    if project is None:
        return None
    budgets = project.applicable(key.id, lambda: user_of(helicone, body))
    if not budgets:
        return None
    now = cache.now()
    windows = [cache.periods.bounds(budget.period, now) for budget in budgets]
    plan = BudgetPlan([counter_key(b, start) for b, (start, _) in zip(budgets, windows)],
                      [cache.seed(b, start) for b, (start, _) in zip(budgets, windows)],
                      [end + EXPIRY_GRACE for _, end in windows])
    try:
        values = await counters.read(plan.keys)
    except StateUnavailable as exc:
        log.warning("budget state unavailable, letting the request through: %s", exc)
        return plan
    spent = [plan.seeds[i] if value is None else value for i, value in enumerate(values)]
    remaining = min(b.micro - s for b, s in zip(budgets, spent))
    headers_out.append((b"helicone-budget-remaining", f"{max(0.0, remaining) / MICRO:.6f}".encode()))
    over = [i for i, b in enumerate(budgets) if spent[i] >= b.micro]
    if over:
        # The one that resets last: the call is refused until then.
        i = max(over, key=lambda j: windows[j][1])
        budget, end = budgets[i], windows[i][1]
        when = "this " + budget.period
        if budget.kind == "key" and not budget.target_name and key.name:
            budget = replace(budget, target_name=key.name)
        raise BudgetExceeded(f"Budget exceeded: {budget.describe()} is spent (${spent[i] / MICRO:.6f} {when}); "
                             f"it resets at {iso(end)}.", max(1, math.ceil(end - now)))
    return plan


async def charge(counters: BudgetCounters, plan: BudgetPlan, record: RawRecord,
                 overrides: Mapping[str, PriceOverride]) -> None:
    cost = call_cost(record, overrides)
    if not cost:
        return
    amount = cost * MICRO
    try:
        await counters.add([BudgetCharge(key, amount, seed, expires)
                            for key, seed, expires in zip(plan.keys, plan.seeds, plan.expires)])
    except StateUnavailable as exc:
        log.warning("budget state unavailable, cost not charged: %s", exc)


def call_cost(record: RawRecord, overrides: Mapping[str, PriceOverride]) -> float | None:
    """USD as the recorder prices the call (recording/process.py); None when unpriced."""
    if record.cache_hit:
        return 0.0
    path = urlsplit(record.target_url).path or record.path.split("?", 1)[0]
    body = decode_body(record.response_body, record.response_encoding)
    usage = extract_usage(record.family, path, body, streamed=record.streamed)
    if not billable(record.method, path) or (record.status >= 400 and not usage.has_usage):
        return 0.0
    model = record.helicone.get("helicone-model-override") or usage.model or _request_model(record.request_body)
    cost, _ = price(record.provider, model, usage, overrides, at=datetime.fromtimestamp(record.created_at, tz=UTC))
    return cost


def _request_model(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None
