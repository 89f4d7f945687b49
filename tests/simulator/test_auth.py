"""Authorization: every documented 10xx code, the official snippet, the API key, the clock."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import pytest

from kling_async.simulator import Simulator

from .helpers import PATH, make_token


async def _list(sim: Simulator, http: aiohttp.ClientSession, auth: str | None) -> Any:
    headers = {} if auth is None else {"Authorization": auth}
    async with http.get(sim.url + PATH, headers=headers) as r:
        return r.status, await r.json()


async def test_official_snippet_token_is_accepted(sim: Simulator, http: aiohttp.ClientSession):
    access_key, secret_key = sim.access_key, sim.secret_key
    now = int(time.time())
    token = jwt.encode(
        {"iss": access_key, "exp": now + 1800, "nbf": now - 5},
        secret_key,
        headers={"alg": "HS256", "typ": "JWT"},
    )
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"], data["data"]) == (200, 0, [])


async def test_api_key_as_bearer_is_accepted(sim: Simulator, http: aiohttp.ClientSession):
    assert sim.api_key
    status, data = await _list(sim, http, f"Bearer {sim.api_key}")
    assert (status, data["code"]) == (200, 0)


async def test_sim_helper_token_is_accepted(sim: Simulator, http: aiohttp.ClientSession):
    status, data = await _list(sim, http, sim.auth_headers()["Authorization"])
    assert (status, data["code"]) == (200, 0)


@pytest.mark.parametrize("auth", [None, "", "   "])
async def test_missing_or_empty_header_is_1001(sim: Simulator, http, auth):
    status, data = await _list(sim, http, auth)
    assert (status, data["code"]) == (401, 1001)
    assert set(data) == {"code", "message", "request_id", "data"}


async def test_bearer_without_token_is_1001(sim: Simulator, http):
    status, data = await _list(sim, http, "Bearer ")
    assert (status, data["code"]) == (401, 1001)


@pytest.mark.parametrize("auth", ["Basic abc", "bearer xyz", "Token abc"])
async def test_not_bearer_is_1000(sim: Simulator, http, auth):
    status, data = await _list(sim, http, auth)
    assert (status, data["code"]) == (401, 1000)


async def test_bad_signature_is_1002(sim: Simulator, http):
    token = make_token(sim.access_key, "x" * 40)
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1002)


async def test_wrong_iss_is_1002(sim: Simulator, http):
    token = make_token("someone-else", sim.secret_key)
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1002)
    assert "iss" in data["message"]


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30."])
async def test_malformed_token_is_1002(sim: Simulator, http, token):
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1002)


async def test_wrong_algorithm_is_1002(sim: Simulator, http):
    now = int(time.time())
    token = jwt.encode(
        {"iss": sim.access_key, "exp": now + 60}, sim.secret_key * 2, algorithm="HS512"
    )
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1002)


async def test_typ_other_than_jwt_is_1002(sim: Simulator, http):
    token = make_token(sim.access_key, sim.secret_key, headers={"alg": "HS256", "typ": "XYZ"})
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1002)


async def test_missing_exp_is_1002(sim: Simulator, http):
    token = jwt.encode({"iss": sim.access_key}, sim.secret_key, headers={"typ": "JWT"})
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1002)


async def test_nbf_in_future_is_1003(sim: Simulator, http):
    token = make_token(sim.access_key, sim.secret_key, nbf_offset=120)
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1003)


async def test_expired_is_1004(sim: Simulator, http):
    token = make_token(sim.access_key, sim.secret_key, exp_in=-1)
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1004)


async def test_advancing_the_clock_expires_a_token(sim: Simulator, http):
    token = make_token(sim.access_key, sim.secret_key)
    assert (await _list(sim, http, f"Bearer {token}"))[0] == 200
    sim.advance(1801)
    status, data = await _list(sim, http, f"Bearer {token}")
    assert (status, data["code"]) == (401, 1004)
    # the plain API key has no lifetime
    assert (await _list(sim, http, f"Bearer {sim.api_key}"))[0] == 200


async def test_auth_on_real_clock_ignores_advance(http):
    async with Simulator(auth_uses_sim_clock=False) as sim:
        sim.advance(40 * 86400)
        token = make_token(sim.access_key, sim.secret_key)
        assert (await _list(sim, http, f"Bearer {token}"))[0] == 200


async def test_api_key_can_be_disabled(http):
    async with Simulator(api_key=None) as sim:
        status, data = await _list(sim, http, "Bearer sim-api-key-0123456789abcdef0123456789")
        assert (status, data["code"]) == (401, 1002)


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        Simulator(secret_key="short")
