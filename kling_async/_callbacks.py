"""CallbackReceiver: turns Kling's status callbacks into "sweep now" hints for a Client.

A callback is only a hint, confirmed by a query before anyone is told the task's result. A claim
that a task we follow ended frees its concurrency slot at once (Kling freed it), and sweeps
confirm such claims in batches; a forged one costs at most one create that Kling refuses (1303),
and the slot is held again when the query shows the task still running. Repeated or reordered
callbacks change nothing. Callbacks can also be lost, which is why the tracker keeps polling as
the safety net (sparingly, while every completion is announced).

Bodies are read tolerantly: the documented flat task (`task_id`, possibly a number) and the newer
`{id, status, …}` shape both wake the tracker. Any other well-formed JSON object is answered 200
too, and only counted (`ignored`): an error status would make the sender deliver it again and
again. Only a malformed body (not JSON, not an object, too big) gets 400, and a bad signature 401.

Use it three ways: mount `receiver.handler` in your own aiohttp app, pass the raw body and headers
from any framework to `receiver.receive()`, or let it run its own small server
(`async with CallbackReceiver(client) as receiver:` then give Kling `receiver.url`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from ._errors import ConfigurationError
from ._events import CallbackReceived, emit
from ._types import Clock
from .models._tolerant import as_status, as_text

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["CallbackReceiver", "sign_webhook"]

logger = logging.getLogger("kling_async")

#: Kling's callback is a small flat task object; anything bigger is not one.
MAX_BODY = 1 << 20
#: Standard Webhooks' replay window, in seconds, either side of our clock.
TOLERANCE = 300.0
_SECRET_PREFIX = "whsec_"


def _field(payload: dict[str, Any], *names: str) -> str | None:
    """The first of `names` holding text (or a number, read as text), also under `data`."""
    for where in (payload, payload.get("data")):
        if isinstance(where, dict):
            for name in names:
                value = as_text(where.get(name))
                if isinstance(value, str) and value.strip():
                    return value.strip()[:200]
    return None


def _webhook_key(secret: str) -> bytes:
    """The HMAC key: Standard Webhooks secrets are base64 after an optional `whsec_` prefix."""
    raw = secret.removeprefix(_SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("webhook secret must be base64 (after 'whsec_')") from None
    if not key:
        raise ConfigurationError("webhook secret is empty")
    return key


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value Standard Webhooks gives `body` (`v1,<base64 HMAC>`)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class CallbackReceiver:
    """Receives Kling callbacks and wakes `client`'s tracker; see the module docstring."""

    def __init__(
        self,
        client: Client,
        *,
        path: str = "/kling/callback",
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        if not path.startswith("/"):
            raise ConfigurationError(f"path must start with '/', got {path!r}")
        self.client = client
        self.path = path
        self.host = host
        self.port = port
        self.public_url = public_url
        self._key = None if secret is None else _webhook_key(secret)  # fail early on a bad secret
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._bound: str | None = None
        self.accepted = 0
        self.rejected = 0
        self.ignored = 0  # well-formed, but naming no task: answered 200, nothing done

    def __repr__(self) -> str:  # never the secret
        signed = "signed" if self._key else "unsigned"
        return f"CallbackReceiver(url={self._bound or self.public_url!r}, {signed})"

    @property
    def url(self) -> str:
        """The callback_url to give Kling: `public_url` if set, else where our server listens."""
        if self.public_url is not None:
            return self.public_url
        if self._bound is None:
            raise RuntimeError("CallbackReceiver is not running: start() it or pass public_url")
        return self._bound

    # -- checking one delivery ----------------------------------------------------------------

    def receive(self, body: bytes, headers: Mapping[str, str]) -> int:
        """Check one delivery from any web framework (raw body, headers); returns the status."""
        status, why, payload = self._check(body, {k.lower(): v for k, v in headers.items()})
        if payload is None:
            self.rejected += 1
            logger.debug("callback rejected (%d): %s", status, why)
            return status
        task_id = _field(payload, "task_id", "id")
        if task_id is None:
            self.ignored += 1
            logger.debug("callback ignored (answered 200): it names no task")
            return 200
        self.accepted += 1
        claimed = _field(payload, "task_status", "status")
        claim = None if claimed is None else as_status(claimed)
        emit(self.client.event_hook, CallbackReceived(task_id, claim))
        # A claimed end frees the task's slot now; a confirming query decides the rest.
        self.client.notify(task_id, claim)
        return 200

    def _check(
        self, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, str, dict[str, Any] | None]:
        if len(body) > MAX_BODY:
            return 400, f"body over {MAX_BODY} bytes", None
        if self._key is not None and not self._signed(body, headers):
            return 401, "missing, invalid or stale webhook signature", None
        try:
            payload = json.loads(body)
        except ValueError:  # also UnicodeDecodeError
            return 400, "body is not JSON", None
        if not isinstance(payload, dict):
            return 400, "body is not a JSON object", None
        return 200, "", payload

    def _signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        msg_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        given = headers.get("webhook-signature", "")
        # Bounded digits: int() of a huge header would raise, and no real stamp is that long.
        if not (msg_id and given and stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return False
        if abs(self._clock() - int(stamp)) > TOLERANCE:
            return False  # a replayed old delivery, or a badly wrong clock
        assert self._key is not None
        signed = f"{msg_id}.{stamp}.".encode() + body
        want = hmac.new(self._key, signed, hashlib.sha256).digest()
        # The header may list several space-separated signatures (key rotation): any one will do.
        for item in given.split():
            version, _, value = item.partition(",")
            try:
                sig = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if version == "v1" and hmac.compare_digest(sig, want):
                return True
        return False

    # -- aiohttp glue -------------------------------------------------------------------------

    async def handler(self, request: web.Request) -> web.Response:
        """An aiohttp.web handler: `app.router.add_post(path, receiver.handler)`."""
        body = bytearray()
        # Read in chunks and stop early: the host app's client_max_size may be far larger.
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > MAX_BODY:
                break
        status = self.receive(bytes(body), request.headers)
        return web.Response(status=status, text="ok" if status == 200 else "rejected")

    def app(self) -> web.Application:
        """A standalone aiohttp app serving `path` (POST only)."""
        app = web.Application(client_max_size=MAX_BODY + 1)
        app.router.add_post(self.path, self.handler)
        return app

    async def start(self) -> Self:
        """Serve on `host:port` (127.0.0.1 and a free port by default)."""
        if self._runner is not None:
            return self
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self._bound = f"http://{shown}:{port}{self.path}"
        logger.debug("callback receiver listening on %s", self._bound)
        return self

    async def stop(self) -> None:
        """Stop our server (if started); safe to call twice."""
        runner, self._runner = self._runner, None
        self._bound = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
