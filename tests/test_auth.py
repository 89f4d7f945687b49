"""Credentials, the JWT signer and base-URL discovery (kling_async._auth)."""

from __future__ import annotations

import jwt
import pytest

from kling_async import Client, ConfigurationError, Credentials
from kling_async._auth import (
    NBF_SKEW,
    REFRESH_MARGIN,
    TOKEN_LIFETIME,
    JwtSigner,
    base_url_from_env,
    mask,
)
from kling_async._config import DEFAULT_BASE_URL

NOW = 1_722_769_557


class FakeClock:
    """A settable wall clock."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _token(header: str) -> str:
    assert header.startswith("Bearer ")
    assert header.count(" ") == 1
    return header.removeprefix("Bearer ")


def test_token_header_and_claims(access_key: str, secret_key: str) -> None:
    clock = FakeClock(NOW + 0.7)  # fractions are truncated to integer seconds
    signer = JwtSigner(Credentials(access_key=access_key, secret_key=secret_key), clock=clock)
    token = _token(signer.header())
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(
        token,
        secret_key,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {"iss": access_key, "exp": NOW + 1800, "nbf": NOW - 5}
    assert all(type(claims[k]) is int for k in ("exp", "nbf"))
    assert (TOKEN_LIFETIME, NBF_SKEW, REFRESH_MARGIN) == (1800, 5, 300)


def test_token_verifies_against_wall_clock(access_key: str, secret_key: str) -> None:
    signer = JwtSigner(Credentials(access_key=access_key, secret_key=secret_key))
    claims = jwt.decode(_token(signer.header()), secret_key, algorithms=["HS256"])
    assert claims["iss"] == access_key
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(_token(signer.header()), secret_key + "x", algorithms=["HS256"])


def test_matches_documented_example(access_key: str, secret_key: str) -> None:
    payload = {"iss": access_key, "exp": NOW + 1800, "nbf": NOW - 5}
    documented = jwt.encode(payload, secret_key, headers={"alg": "HS256", "typ": "JWT"})
    signer = JwtSigner(Credentials(access_key=access_key, secret_key=secret_key), clock=FakeClock())
    assert _token(signer.header()) == documented


def test_token_cached_then_resigned_before_expiry(access_key: str, secret_key: str) -> None:
    clock = FakeClock()
    signer = JwtSigner(Credentials(access_key=access_key, secret_key=secret_key), clock=clock)
    first = signer.header()
    clock.now = NOW + 1800 - 300 - 1  # still more than 300 s left: reuse
    assert signer.header() == first
    clock.now = NOW + 1800 - 300  # 300 s before exp: sign afresh
    second = signer.header()
    assert second != first
    claims = jwt.decode(
        _token(second), secret_key, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims["exp"] == NOW + 1500 + 1800
    assert claims["nbf"] == NOW + 1500 - 5
    clock.now += 10
    assert signer.header() == second


def test_long_batch_keeps_fresh_tokens(access_key: str, secret_key: str) -> None:
    clock = FakeClock()
    signer = JwtSigner(Credentials(access_key=access_key, secret_key=secret_key), clock=clock)
    for _ in range(40):  # ten hours in 15-minute steps
        token = _token(signer.header())
        claims = jwt.decode(token, secret_key, algorithms=["HS256"], options={"verify_exp": False})
        assert claims["exp"] - clock.now >= REFRESH_MARGIN
        assert claims["nbf"] <= clock.now
        clock.now += 900


def test_invalidate_forces_new_token(access_key: str, secret_key: str) -> None:
    clock = FakeClock()
    signer = JwtSigner(Credentials(access_key=access_key, secret_key=secret_key), clock=clock)
    first = signer.header()
    clock.now += 1
    assert signer.header() == first
    signer.invalidate()
    assert signer.header() != first


def test_api_key_sent_as_bearer(api_key: str) -> None:
    signer = JwtSigner(Credentials(api_key=api_key))
    assert signer.header() == f"Bearer {api_key}"
    signer.invalidate()
    assert signer.header() == f"Bearer {api_key}"


# --- Credentials.from_env ------------------------------------------------------------------


def test_from_env_explicit_arguments_win(access_key: str, secret_key: str) -> None:
    env = {"KLING_ACCESS_KEY": "env-ak", "KLING_SECRET_KEY": "env-sk", "KLING_API_KEY": "env-k"}
    creds = Credentials.from_env(access_key, secret_key, environ=env)
    assert (creds.access_key, creds.secret_key, creds.api_key) == (access_key, secret_key, None)
    creds = Credentials.from_env(api_key="explicit-key", environ=env)
    assert creds.api_key == "explicit-key"
    assert creds.access_key is None


def test_from_env_pair(access_key: str, secret_key: str) -> None:
    env = {"KLING_ACCESS_KEY": access_key, "KLING_SECRET_KEY": secret_key}
    creds = Credentials.from_env(environ=env)
    assert (creds.access_key, creds.secret_key, creds.api_key) == (access_key, secret_key, None)


def test_from_env_pair_preferred_over_api_key(access_key: str, secret_key: str) -> None:
    env = {"KLING_ACCESS_KEY": access_key, "KLING_SECRET_KEY": secret_key, "KLING_API_KEY": "k"}
    assert Credentials.from_env(environ=env).access_key == access_key


def test_from_env_api_key(api_key: str) -> None:
    creds = Credentials.from_env(environ={"KLING_API_KEY": api_key})
    assert creds.api_key == api_key
    assert creds.access_key is None


@pytest.mark.parametrize(
    ("env", "missing", "present"),
    [
        ({"KLING_ACCESS_KEY": "ak"}, "KLING_SECRET_KEY", "KLING_ACCESS_KEY"),
        ({"KLING_SECRET_KEY": "sk"}, "KLING_ACCESS_KEY", "KLING_SECRET_KEY"),
        ({"KLING_ACCESS_KEY": "ak", "KLING_SECRET_KEY": ""}, "KLING_SECRET_KEY", "ak"),
    ],
)
def test_from_env_partial_pair(env: dict[str, str], missing: str, present: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Credentials.from_env(environ=env)
    assert missing in str(info.value)
    assert f"set {present}" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_from_env_partial_explicit() -> None:
    with pytest.raises(ConfigurationError, match="KLING_SECRET_KEY"):
        Credentials.from_env(access_key="ak", environ={})


def test_from_env_nothing() -> None:
    with pytest.raises(ConfigurationError) as info:
        Credentials.from_env(environ={})
    text = str(info.value)
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_API_KEY"):
        assert name in text


def test_direct_construction_incomplete() -> None:
    with pytest.raises(ConfigurationError, match="KLING_ACCESS_KEY and KLING_SECRET_KEY"):
        Credentials()


def test_base_url_from_env() -> None:
    assert base_url_from_env({}) == DEFAULT_BASE_URL
    assert base_url_from_env({"KLING_BASE_URL": ""}) == DEFAULT_BASE_URL
    assert base_url_from_env({"KLING_BASE_URL": "http://127.0.0.1:9/"}) == "http://127.0.0.1:9"
    assert DEFAULT_BASE_URL == "https://api-singapore.klingai.com"


def test_base_url_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_BASE_URL", "http://example.test")
    assert base_url_from_env() == "http://example.test"


def test_client_reads_environment(
    monkeypatch: pytest.MonkeyPatch, access_key: str, secret_key: str
) -> None:
    monkeypatch.delenv("KLING_API_KEY", raising=False)
    monkeypatch.setenv("KLING_ACCESS_KEY", access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", secret_key)
    monkeypatch.setenv("KLING_BASE_URL", "http://127.0.0.1:1/")
    client = Client.from_env()
    assert client.credentials.access_key == access_key
    assert client.base_url == "http://127.0.0.1:1"


def test_client_environ_mapping(api_key: str) -> None:
    client = Client(environ={"KLING_API_KEY": api_key, "KLING_BASE_URL": "http://x.test"})
    assert client.credentials.api_key == api_key
    assert client.base_url == "http://x.test"
    with pytest.raises(ConfigurationError):
        Client(environ={})


# --- nothing secret in repr/str --------------------------------------------------------------


def test_reprs_hide_secrets(access_key: str, secret_key: str, api_key: str) -> None:
    pair = Credentials(access_key=access_key, secret_key=secret_key)
    keyed = Credentials(api_key=api_key)
    signer = JwtSigner(pair)
    token = _token(signer.header())  # a cached token must not leak either
    key_signer = JwtSigner(keyed)
    key_signer.header()
    clients = [
        Client(pair, base_url="http://127.0.0.1:1"),
        Client(access_key=access_key, secret_key=secret_key, base_url="http://127.0.0.1:1"),
        Client(api_key=api_key, base_url="http://127.0.0.1:1"),
    ]
    for obj in (pair, keyed, signer, key_signer, *clients):
        for text in (repr(obj), str(obj)):
            assert secret_key not in text
            assert api_key not in text
            assert token not in text
    assert access_key in repr(pair)
    assert "***" in repr(pair)


def test_mask() -> None:
    assert mask("short") == "***"
    assert mask("abcdefghijklmnop") == "abcd…op"
