"""Authorization checks: HS256 JWT signed with the secret key, or a plain API key."""

from __future__ import annotations

import hmac
from collections import OrderedDict
from typing import Any

import jwt

from ._protocol import SimError

__all__ = ["Authenticator"]

_PREFIX = "Bearer "
_CACHE_SIZE = 1024


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Authenticator:
    """Checks Authorization headers against one account's AK/SK (and optional API key)."""

    def __init__(self, access_key: str, secret_key: str, api_key: str | None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.api_key = api_key
        # Signature checks cost ~0.1 ms; clients reuse a token for many requests, so remember
        # the claims of tokens already verified (times are still checked on every request).
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _claims(self, token: str) -> dict[str, Any]:
        claims = self._verified.get(token)
        if claims is not None:
            self._verified.move_to_end(token)
            return claims
        try:
            head = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.secret_key,
                algorithms=["HS256"],
                # exp/nbf are checked below against the simulator's clock, not pyjwt's.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            raise SimError(1002, "Authorization is invalid: bad signature") from None
        except jwt.PyJWTError as exc:
            raise SimError(1002, f"Authorization is invalid: {exc}") from None
        if head.get("typ") != "JWT":
            raise SimError(1002, "Authorization is invalid: header typ must be 'JWT'")
        if claims.get("iss") != self.access_key:
            raise SimError(1002, "Authorization is invalid: iss is not a known access key")
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is None or not _number(exp):
            raise SimError(1002, "Authorization is invalid: exp claim missing or not a number")
        if nbf is not None and not _number(nbf):
            raise SimError(1002, "Authorization is invalid: nbf claim is not a number")
        self._verified[token] = claims
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def check(self, header: str | None, now: float) -> None:
        """Raise SimError(1000..1004) unless ``header`` authorizes a request at time ``now``."""
        if header is None or not header.strip():
            raise SimError(1001, "Authorization is empty")
        if header.strip() == _PREFIX.strip():  # HTTP stacks strip the trailing space of "Bearer "
            raise SimError(1001, "Authorization is empty: no token after 'Bearer '")
        if not header.startswith(_PREFIX):
            raise SimError(1000, "authentication failed: Authorization must start with 'Bearer '")
        token = header[len(_PREFIX) :]
        if not token.strip():
            raise SimError(1001, "Authorization is empty: no token after 'Bearer '")
        if self.api_key is not None and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return
        claims = self._claims(token)
        nbf = claims.get("nbf")
        if nbf is not None and now < nbf:
            raise SimError(1003, f"token not yet valid: nbf {nbf} is after now {int(now)}")
        if now >= claims["exp"]:
            raise SimError(1004, f"token expired: exp {claims['exp']} is before now {int(now)}")
