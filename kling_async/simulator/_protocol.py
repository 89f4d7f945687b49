"""Kling's wire conventions: the error-code table, the envelope, and the error exception."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

__all__ = [
    "CODE_MESSAGES",
    "CODE_STATUS",
    "SimError",
    "envelope",
    "error_response",
    "json_response",
]

# HTTP status and default message of every business code in general.md's table.
CODE_STATUS: dict[int, int] = {
    0: 200,
    1000: 401,
    1001: 401,
    1002: 401,
    1003: 401,
    1004: 401,
    1100: 429,
    1101: 429,
    1102: 429,
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    1302: 429,
    1303: 429,
    1304: 429,
    5000: 500,
    5001: 503,
    5002: 504,
}

CODE_MESSAGES: dict[int, str] = {
    0: "SUCCEED",
    1000: "authentication failed",
    1001: "Authorization is empty",
    1002: "Authorization is invalid",
    1003: "token not yet valid",
    1004: "token expired",
    1100: "account exception",
    1101: "account in arrears",
    1102: "resource pack depleted or expired",
    1103: "no permission for the requested resource",
    1200: "invalid request parameters",
    1201: "invalid parameters",
    1202: "invalid request method",
    1203: "requested resource does not exist",
    1300: "platform policy triggered",
    1301: "content security policy triggered",
    1302: "requests too fast, rate limit exceeded",
    1303: "parallel task over resource pack limit",
    1304: "IP whitelist policy triggered",
    5000: "server internal error",
    5001: "server temporarily unavailable",
    5002: "server internal timeout",
}

# Codes whose answers carry no "data" key at all (general.md shows 1303 without it).
_NO_DATA_CODES = frozenset({1303})


class SimError(Exception):
    """A business error answered as ``{code, message, request_id}`` with the table's status."""

    def __init__(self, code: int, message: str | None = None, status: int | None = None) -> None:
        self.code = code
        self.message = message if message is not None else CODE_MESSAGES.get(code, "error")
        self.status = status if status is not None else CODE_STATUS.get(code, 400)
        super().__init__(f"{self.code}: {self.message}")


def envelope(
    code: int, message: str, data: Any = None, *, with_data: bool = True
) -> dict[str, Any]:
    """Build the documented envelope with a fresh uuid4 request_id."""
    body: dict[str, Any] = {"code": code, "message": message, "request_id": str(uuid.uuid4())}
    if with_data:
        body["data"] = data
    return body


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer (compact, UTF-8)."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def error_response(error: SimError) -> web.Response:
    """The envelope answer of a business error."""
    body = envelope(error.code, error.message, with_data=error.code not in _NO_DATA_CODES)
    return json_response(body, error.status)
