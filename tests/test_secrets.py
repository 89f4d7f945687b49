"""Secrets never leak: not the secret key, not the API key, not any JWT the client made.

A full small batch runs against the simulator with DEBUG logging on, an event hook recording
everything, one create forced to fail and one invalid job; then every log record, event, repr,
error message, results.jsonl and the journal's bytes (and its WAL, snapshotted mid-run) are
searched. The video origin must never see an Authorization header, and TLS stays verified.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import ssl
import subprocess
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import make_png
from fakes import token_trace

import kling_async
from kling_async import (
    AuthenticationError,
    BatchResult,
    Client,
    ConnectError,
    Credentials,
    Event,
    KlingError,
    Limits,
    PollPolicy,
    RetryPolicy,
)
from kling_async._auth import JwtSigner
from kling_async.simulator import Simulator

ACCESS_KEY = "AK-secrets-test-0123456789"
SECRET_KEY = "SK-very-secret-3f9c1d7e5b2a4c6e8f0a1b3c5d7e9f1a"
API_KEY = "APIKEY-very-secret-9e8d7c6b5a4f3e2d1c0b9a8f7e6d"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
RETRY = RetryPolicy(attempts=4, wait_initial=0.01, wait_max=0.05, timeout=30)
POLL = PollPolicy(interval=0.05, interval_max=0.1, min_interval=0.02)
PACKAGE = Path(kling_async.__file__).parent


@dataclass
class Evidence:
    """Everything the client and batch produced that a user or log could see."""

    texts: list[str] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # Authorization values on the wire
    events: list[Event] = field(default_factory=list)

    def hook(self, out_dir: Path) -> Any:
        def record(event: Event) -> None:
            self.events.append(event)
            self.texts.append(repr(event))
            for name in ("journal.sqlite3-wal", "journal.sqlite3"):  # the WAL exists mid-run
                path = out_dir / name
                if path.exists():
                    self.blobs.append(path.read_bytes())

        return record

    def session(self) -> aiohttp.ClientSession:
        """A session (for a client to borrow) that records every token sent over it."""
        return aiohttp.ClientSession(trace_configs=[token_trace(self.sent)])

    @property
    def tokens(self) -> set[str]:
        return {value.removeprefix("Bearer ") for value in self.sent}

    def error(self, exc: BaseException) -> None:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self.texts += [str(current), repr(current), repr(vars(current))]
            current = current.__cause__ or current.__context__
        self.texts.append("".join(traceback.format_exception(exc)))

    def records(self, records: list[logging.LogRecord]) -> None:
        formatter = logging.Formatter()
        for r in records:
            self.texts += [r.getMessage(), repr(r.args), repr(r.__dict__)]
            if r.exc_info:
                self.texts.append(formatter.formatException(r.exc_info))
            if r.exc_text:
                self.texts.append(r.exc_text)

    def files(self, out_dir: Path) -> None:
        for path in sorted(out_dir.glob("*")):
            if path.is_file():
                self.blobs.append(path.read_bytes())

    def assert_clean(self, *secrets: str) -> None:
        needles = [s for s in secrets if s]
        for token in self.tokens:
            needles.append(token)
            if token.count(".") == 2:
                needles.append(token.split(".")[2])  # the signature alone
        assert needles
        for text in self.texts:
            for needle in needles:
                assert needle not in text, f"secret found in: {text[:300]}"
            assert not JWT.search(text), f"a JWT in: {text[:300]}"
        for blob in self.blobs:
            for needle in needles:
                assert needle.encode() not in blob, "secret found in a file"
            assert not JWT.search(blob.decode("latin-1")), "a JWT in a file"


def write_jobs(tmp: Path, valid: int) -> Path:
    images = []
    for i in range(2):
        path = tmp / f"ref{i}.png"
        path.write_bytes(make_png(320 + i, 320))
        images.append(path.name)
    lines = [
        json.dumps({"images": images, "prompt": f"a dog, take {n}", "mode": "std"})
        for n in range(valid)
    ]
    lines.insert(2, json.dumps({"images": images, "prompt": "bad duration", "duration": "7"}))
    path = tmp / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with our own keys (so the test knows exactly what must stay secret)."""
    async with Simulator(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        api_key=API_KEY,
        concurrency=3,
        gen_seconds=0.05,
        gen_spread=0.0,
    ) as s:
        yield s


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged, at DEBUG, by kling_async and by the root logger."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kling_async")
    yield caplog


async def run(client: Client, jobs: Path, out: Path, ev: Evidence) -> list[BatchResult]:
    results = []
    async for result in kling_async.run_batch(client, jobs, out):
        results.append(result)
        ev.texts += [repr(result), json.dumps(result.as_dict(), default=str)]
    return results


@pytest.mark.parametrize("mode", ["jwt", "api_key"])
async def test_a_batch_leaks_no_secret(
    sim: Simulator, logs: pytest.LogCaptureFixture, tmp_path: Path, mode: str
) -> None:
    ev = Evidence()
    out = tmp_path / "out"
    keys: dict[str, Any] = (
        {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
        if mode == "jwt"
        else {"api_key": API_KEY}
    )
    # One create fails for good (content policy) after a 5000 it was retried through; the
    # query and list routes answer garbage once each.
    sim.faults.script("create", "none", "5000", "1301")
    sim.faults.script("query", "garbage")
    sim.faults.script("list", "bad_envelope")
    async with (
        ev.session() as session,
        Client(
            **keys,
            base_url=sim.url,
            session=session,
            retry=RETRY,
            poll=POLL,
            limits=Limits(concurrency=3, rps=1000),
            event_hook=ev.hook(out),
        ) as client,
    ):
        results = await run(client, write_jobs(tmp_path, valid=5), out, ev)
        ev.texts += [repr(client), str(client), repr(client.credentials)]
        ev.texts += [str(client.credentials), repr(client.stats), repr(vars(client))]
    states = sorted(r.state for r in results)
    assert states.count("downloaded") == 4, states
    assert states.count("rejected") == 2, states  # the invalid job and the refused create
    assert any(r.error and r.error.code == 1301 for r in results)
    assert any(r.error and r.error.field == "duration" for r in results)
    assert sim.stats.video_auth_headers == 0  # the video origin never saw Authorization
    assert sim.stats.requests["video"] >= 4
    assert any(e.kind == "request_retry" for e in ev.events)

    # Errors a user would see with the wrong key, and their whole chains.
    wrong: dict[str, Any] = {
        k: v[:-4] + "XXXX" if k != "access_key" else v for k, v in keys.items()
    }
    async with (
        ev.session() as session,
        Client(**wrong, base_url=sim.url, session=session, retry=RETRY) as bad,
    ):
        with pytest.raises(AuthenticationError) as info:
            await bad.get_task("1")
    ev.error(info.value)
    for r in results:
        if r.error:
            ev.texts.append(json.dumps(r.error.as_dict()))

    ev.records(logs.records)
    ev.files(out)
    assert any(b.startswith(b"SQLite format 3") for b in ev.blobs)
    assert any(b[:4] in (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83") for b in ev.blobs)  # a WAL
    assert len(ev.tokens) >= 2 if mode == "jwt" else ev.tokens == {API_KEY, wrong["api_key"]}
    ev.assert_clean(SECRET_KEY, API_KEY, wrong.get("secret_key", ""), wrong.get("api_key", ""))
    assert len(logs.records) > 20  # DEBUG logging really was on


def test_reprs_never_show_keys() -> None:
    pair = Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    keyed = Credentials(api_key=API_KEY)
    signer = JwtSigner(pair)
    token = signer.header()
    texts = [repr(pair), str(pair), repr(keyed), str(keyed), repr(signer), str(signer)]
    texts += [repr(JwtSigner(keyed)), f"{pair}", f"{keyed!r}"]
    client = Client(pair, base_url="http://127.0.0.1:1")
    texts += [repr(client), str(client), repr(vars(client))]
    for text in texts:
        assert SECRET_KEY not in text and API_KEY not in text
        assert token.split(".")[-1] not in text


@pytest.mark.parametrize(
    "keys",
    [
        {"api_key": API_KEY + "\r\nX-Injected: 1"},
        {"api_key": " " + API_KEY},
        {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY + "\n"},
    ],
    ids=["header injection", "leading space", "trailing newline"],
)
def test_keys_with_control_characters_are_refused_without_echo(keys: dict[str, str]) -> None:
    with pytest.raises(kling_async.ConfigurationError) as info:
        Credentials(**keys)
    assert SECRET_KEY not in str(info.value) and API_KEY not in str(info.value)


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    args += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1"]
    args += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(["openssl", *args], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_a_self_signed_server_is_refused_before_any_request(
    self_signed: ssl.SSLContext,
) -> None:
    context = self_signed
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"code": 0, "data": None})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    host, port = runner.addresses[0][:2]
    try:
        async with Client(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            base_url=f"https://{host}:{port}",
            retry=RetryPolicy(attempts=1),
        ) as client:
            with pytest.raises(ConnectError) as info:
                await client.get_task("1")
    finally:
        await runner.cleanup()
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectorCertificateError)
    assert seen == []  # the token never went over the unverified connection


def test_no_tls_switches_in_the_package() -> None:
    pattern = re.compile(r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


async def test_a_redirect_to_another_origin_gets_no_token(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"code": 0, "data": None})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{other}/steal{request.path}")

    runners = []
    urls = []
    for handler in (elsewhere, redirect):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        urls.append(f"http://{host}:{port}")
    other, api = urls
    try:
        async with Client(
            access_key=ACCESS_KEY, secret_key=SECRET_KEY, base_url=api, retry=RETRY
        ) as client:
            with pytest.raises(KlingError):
                await client.get_task("1")
    finally:
        for runner in runners:
            await runner.cleanup()
    assert seen and all(h is None for h in seen)


def test_the_detector_itself_finds_planted_secrets() -> None:
    token = JwtSigner(Credentials(access_key=ACCESS_KEY, secret_key=SECRET_KEY)).header()[7:]
    for planted in (
        Evidence(texts=[f"Authorization: Bearer {token}"]),
        Evidence(texts=["sig=" + token.split(".")[2]], sent=[f"Bearer {token}"]),
        Evidence(blobs=[b"\x00" + SECRET_KEY.encode()]),
        Evidence(blobs=[token.encode()]),
    ):
        with pytest.raises(AssertionError):
            planted.assert_clean(SECRET_KEY)
