"""Runtime control: the settings JSON (shared by HTTP and in-process calls) and /__sim routes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ._core import Core
from ._faults import ROUTE_KINDS, FaultInjector
from ._outage import check_mode
from ._prices import check_prices
from ._shapes import check_shapes

__all__ = ["CONTROL_KEYS", "add_control_routes", "apply_control", "describe"]

CONTROL_KEYS = frozenset(
    {
        "concurrency",
        "held_slots",
        "rate_limit",
        "advance",
        "fail_rate",
        "gen_seconds",
        "callbacks",
        "duplicate_callbacks",
        "clear_faults",
        "fault_rates",
        "fault_scripts",
        "prices",
        "shapes",
        "outage",
    }
)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (got {value!r})")
    return value


def _float(value: Any, name: str, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 (got {value!r})")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high} (got {value!r})")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a boolean (got {value!r})")
    return value


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object (got {value!r})")
    for kind in value:
        if kind not in ROUTE_KINDS:
            raise ValueError(f"{name}: unknown route kind {kind!r}")
    return value


def apply_control(core: Core, settings: Mapping[str, Any]) -> None:
    """Apply a control document; ValueError (nothing applied) on any bad key or value."""
    unknown = sorted(set(settings) - CONTROL_KEYS)
    if unknown:
        raise ValueError(f"unknown control key(s): {', '.join(unknown)}")
    s = settings
    # Validate every value before changing anything.
    concurrency = _int(s["concurrency"], "concurrency") if "concurrency" in s else None
    held = _int(s["held_slots"], "held_slots") if "held_slots" in s else None
    rate = s.get("rate_limit")
    if rate is not None and (_float(rate, "rate_limit") == 0):
        raise ValueError("rate_limit must be > 0, or null for no limit")
    advance = _float(s["advance"], "advance") if "advance" in s else None
    fail_rate = _float(s["fail_rate"], "fail_rate", 1.0) if "fail_rate" in s else None
    gen_seconds = _float(s["gen_seconds"], "gen_seconds") if "gen_seconds" in s else None
    callbacks = _bool(s["callbacks"], "callbacks") if "callbacks" in s else None
    duplicate = (
        _bool(s["duplicate_callbacks"], "duplicate_callbacks")
        if "duplicate_callbacks" in s
        else None
    )
    clear = s.get("clear_faults", False)
    if not isinstance(clear, bool) and clear not in ROUTE_KINDS:
        raise ValueError(f"clear_faults must be a boolean or a route kind (got {clear!r})")
    outage = _outage(s["outage"]) if "outage" in s else None
    prices = check_prices(s["prices"]) if "prices" in s else {}
    shapes = check_shapes(s.get("shapes", {}))
    rates = _mapping(s.get("fault_rates", {}), "fault_rates")
    scripts = _mapping(s.get("fault_scripts", {}), "fault_scripts")
    # Faults validate themselves; check them on a scratch injector first.
    scratch = FaultInjector()
    for kind, plan in rates.items():
        scratch.set_rates(kind, _mapping_of_floats(plan, kind))
    for kind, faults in scripts.items():
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            raise ValueError(f"fault_scripts.{kind} must be a list of strings")
        scratch.script(kind, *faults)

    store = core.store
    if concurrency is not None:
        store.concurrency = concurrency
    if held is not None:
        store.held_slots = held
    if "rate_limit" in s:
        core.rate_limit = None if rate is None else float(rate)
    if advance is not None:
        core.clock.advance(advance)
        store.clock_moved()
    if fail_rate is not None:
        store.fail_rate = fail_rate
    if gen_seconds is not None:
        store.gen_seconds = gen_seconds
    if callbacks is not None:
        core.callbacks.enabled = callbacks
    if duplicate is not None:
        core.callbacks.duplicate = duplicate
    if clear:
        core.faults.clear(None if clear is True else clear)
    store.prices.update(prices)  # tasks created from now on
    core.shapes.update(shapes)
    for kind, plan in rates.items():
        core.faults.set_rates(kind, plan)
    for kind, faults in scripts.items():
        core.faults.script(kind, *faults)
    if outage is not None:
        core.outage.start(*outage)


def _outage(value: Any) -> tuple[float, str | None]:
    """``seconds`` or ``{"seconds": s, "mode": "refuse" | "hang"}``: (seconds, mode)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"seconds", "mode"})
        if unknown or "seconds" not in value:
            raise ValueError(f"outage must be seconds or {{seconds, mode}} (got {dict(value)!r})")
        mode = value.get("mode")
        if mode is not None:
            check_mode(mode if isinstance(mode, str) else repr(mode))
        return _float(value["seconds"], "outage.seconds"), mode
    return _float(value, "outage"), None


def _mapping_of_floats(plan: Any, kind: str) -> Mapping[str, float]:
    if not isinstance(plan, Mapping):
        raise ValueError(f"fault_rates.{kind} must be an object of fault -> probability")
    for fault, p in plan.items():
        _float(p, f"fault_rates.{kind}.{fault}", 1.0)
    return plan


def describe(core: Core) -> dict[str, Any]:
    """Stats plus current settings, as answered by the /__sim routes."""
    return {
        "stats": core.stats.as_dict(),
        "settings": {
            "concurrency": core.store.concurrency,
            "held_slots": core.store.held_slots,
            "rate_limit": core.rate_limit,
            "fail_rate": core.store.fail_rate,
            "gen_seconds": core.store.gen_seconds,
            "callbacks": core.callbacks.enabled,
            "duplicate_callbacks": core.callbacks.duplicate,
            "clock_offset": core.clock.offset,
            "outage": core.outage.mode,
            "outages": core.outage.count,
            "faults": core.faults.as_dict(),
            "prices": dict(core.store.prices),
            "shapes": core.shapes.as_dict(),
        },
        "tasks": len(core.store),
    }


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def add_control_routes(app: web.Application, core: Core) -> None:
    """Register GET /__sim/stats, POST /__sim/reset and POST /__sim/control (no auth)."""

    async def stats(request: web.Request) -> web.StreamResponse:
        return _json(describe(core))

    async def reset(request: web.Request) -> web.StreamResponse:
        core.stats.reset()
        return _json(describe(core))

    async def control(request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("control body must be a JSON object")
            apply_control(core, body)
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(describe(core))

    app.router.add_get("/__sim/stats", stats)
    app.router.add_post("/__sim/reset", reset)
    app.router.add_post("/__sim/control", control)
