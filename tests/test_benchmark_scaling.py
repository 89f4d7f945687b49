"""The benchmark's time compression: the request rate's slow start is scaled like the rest."""

from __future__ import annotations

from dataclasses import replace

import pytest

import kling_async as kling
from benchmarks._common import RunSpec
from benchmarks._ours import scale_slow_start, scaled_client
from kling_async._adaptive import RateRules


@pytest.mark.asyncio
async def test_the_slow_start_is_scaled_and_the_other_rate_rules_are_not() -> None:
    async with kling.Client(access_key="ak", secret_key="sk", base_url="http://127.0.0.1:9") as c:
        controller = c._http.rate.controller
        before = controller.rules
        assert before.start_rate is not None
        scale_slow_start(c, 2.0 / 120)
        after = controller.rules
        # 60× faster in compressed time: the same curve at real scale.
        assert after.start_rate == pytest.approx(before.start_rate * 60)
        assert after.start_doubling == pytest.approx(before.start_doubling / 60)
        assert after.start_end == pytest.approx(before.start_end * 60)
        same = {"start_rate": 20.0, "start_doubling": 0.25, "start_end": 1000.0}
        assert replace(after, **same) == replace(before, **same)  # the 1302 rules untouched
        # The curve at a compressed moment equals the real one at 60× that moment.
        assert after.start_curve(0.01) == pytest.approx(before.start_curve(0.6) * 60)


@pytest.mark.asyncio
@pytest.mark.parametrize("real_time_rate", [False, True])
async def test_a_limit_in_real_seconds_keeps_the_slow_start_at_real_pace(
    real_time_rate: bool,
) -> None:
    spec = RunSpec(
        api_url="http://127.0.0.1:9",
        access_key="ak",
        secret_key="sk",
        jobs=1,
        concurrency=1,
        gen_seconds=2.0,
        out_dir="unused",
        result_path="unused",
        real_time_rate=real_time_rate,
    )
    default = RateRules().start_rate
    async with scaled_client(spec) as c:
        start_rate = c._http.rate.controller.rules.start_rate
    assert default is not None and start_rate is not None
    assert start_rate == pytest.approx(default if real_time_rate else default * 60)
