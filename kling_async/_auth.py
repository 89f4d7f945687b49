"""Credentials and the JWT signer: tokens made exactly as Kling documents, cached, never shown."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt

from ._config import DEFAULT_BASE_URL
from ._errors import ConfigurationError
from ._types import Clock

__all__ = ["Credentials", "JwtSigner", "base_url_from_env", "mask"]

#: The documented example's token lifetime, and the clock-skew allowance for `nbf`.
TOKEN_LIFETIME = 1800
NBF_SKEW = 5
#: Sign a fresh token this long before the old one expires, so no request carries a dying token.
REFRESH_MARGIN = 300


def mask(secret: str) -> str:
    """Show just enough of a secret to tell keys apart: 'AKab…yz' (never the whole thing)."""
    if len(secret) <= 8:
        return "***"
    return f"{secret[:4]}…{secret[-2:]}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key + secret key pair (JWT scheme), or a single API key sent as the bearer."""

    access_key: str | None = field(default=None)
    secret_key: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, value in (
            ("access key", self.access_key),
            ("secret key", self.secret_key),
            ("API key", self.api_key),
        ):
            # A pasted newline breaks the signature, and in a header it is an injection.
            if value and any(c.isspace() or not c.isprintable() for c in value):
                raise ConfigurationError(
                    f"the Kling {name} contains whitespace or control characters"
                )
        if self.api_key:
            return
        if not self.access_key or not self.secret_key:
            missing = [
                name
                for name, value in (
                    ("KLING_ACCESS_KEY", self.access_key),
                    ("KLING_SECRET_KEY", self.secret_key),
                )
                if not value
            ]
            raise ConfigurationError(
                "Kling credentials are incomplete: set "
                + " and ".join(missing)
                + " (or KLING_API_KEY), or pass them to Credentials(...)"
            )

    @classmethod
    def from_env(
        cls,
        access_key: str | None = None,
        secret_key: str | None = None,
        api_key: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> Credentials:
        """Read KLING_ACCESS_KEY/KLING_SECRET_KEY or KLING_API_KEY; explicit arguments win."""
        env = os.environ if environ is None else environ
        if access_key or secret_key:
            return cls(access_key=access_key, secret_key=secret_key)
        if api_key:
            return cls(api_key=api_key)
        ak, sk, key = (
            env.get("KLING_ACCESS_KEY"),
            env.get("KLING_SECRET_KEY"),
            env.get("KLING_API_KEY"),
        )
        if ak or sk:
            return cls(access_key=ak, secret_key=sk)
        if key:
            return cls(api_key=key)
        raise ConfigurationError(
            "no Kling credentials: set KLING_ACCESS_KEY and KLING_SECRET_KEY "
            "(or KLING_API_KEY), or pass them to Client(...)"
        )

    def __repr__(self) -> str:
        if self.api_key:
            return f"Credentials(api_key='{mask(self.api_key)}')"
        return f"Credentials(access_key={self.access_key!r}, secret_key='***')"

    __str__ = __repr__


def base_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """KLING_BASE_URL, or the documented Singapore endpoint."""
    env = os.environ if environ is None else environ
    return (env.get("KLING_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


class JwtSigner:
    """Makes the `Authorization` value; reuses a token until shortly before it expires."""

    def __init__(self, credentials: Credentials, *, clock: Clock = time.time) -> None:
        self._credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._expires = 0.0

    def __repr__(self) -> str:
        return f"JwtSigner({self._credentials!r})"

    def header(self) -> str:
        """The `Bearer …` value to send now."""
        if self._credentials.api_key:
            return f"Bearer {self._credentials.api_key}"
        now = self._clock()
        if self._token is None or now >= self._expires - REFRESH_MARGIN:
            self._token = self._sign(int(now))
            self._expires = int(now) + TOKEN_LIFETIME
        return f"Bearer {self._token}"

    def invalidate(self) -> None:
        """Forget the cached token (after a 1003/1004): the next header() signs afresh."""
        self._token = None

    def _sign(self, now: int) -> str:
        assert self._credentials.access_key and self._credentials.secret_key
        payload = {
            "iss": self._credentials.access_key,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - NBF_SKEW,
        }
        return jwt.encode(
            payload, self._credentials.secret_key, algorithm="HS256", headers={"typ": "JWT"}
        )
