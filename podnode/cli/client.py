"""The HTTP side of `pod`: calls to a node's action API with the standard library, errors and retries."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sseclient import Event, SSEClient

EXIT_USAGE, EXIT_SERVER, EXIT_TIMEOUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 3, 124, 130, 143
RETRY_BUDGET_S = 10.0
STREAM_READ_TIMEOUT_S = 35.0   # an output stream silent this long (no keep-alive either) has broken off
UNREACHABLE_HINT = ("no cluster there? Start a local one with `./dev.sh up` (or `pod up`) in another terminal,\n"
                    "or name a running node with --url URL or $POD_URL (default http://localhost:8080).")
CACERT_HINT = "give the CA that signed the cluster's certificates with --cacert FILE or $POD_CACERT " \
              "(pod up --tls prints it)"


TOKEN_FILE = Path("pod-data") / "token"
URLS_FILE = Path("pod-data") / "urls"   # pod up lists its nodes' URLs there while it runs
DEFAULT_URL = "http://localhost:8080"
NO_TOKEN_HINT = ("pod found no token: pass --token TOKEN, set $POD_TOKEN, or run pod where `pod up` made "
                 "pod-data/token")


def find_token(given: str | None) -> str | None:
    """The token to send: --token, else $POD_TOKEN, else ./pod-data/token (`pod up`'s admin token), else none."""
    if given:
        return given.strip()
    if os.environ.get("POD_TOKEN", "").strip():
        return os.environ["POD_TOKEN"].strip()
    try:
        return TOKEN_FILE.read_text().strip() or None
    except OSError:
        return None


def find_urls(given: str | None) -> list[str]:
    """The nodes to ask: --url, else $POD_URL, else the nodes of the `pod up` running from here (./pod-data/urls,
    each asked in turn when one cannot be reached), else http://localhost:8080."""
    if given:
        return [given]
    if os.environ.get("POD_URL", "").strip():
        return [os.environ["POD_URL"].strip()]
    try:
        listed = [u.strip() for u in URLS_FILE.read_text().splitlines()]
    except (OSError, UnicodeDecodeError):
        listed = []
    listed = [u for u in listed if u.startswith(("http://", "https://"))]
    return listed or [DEFAULT_URL]


class CliError(Exception):
    """Ends the command: the message goes to stderr as `pod: ...`, the process exits with `code`."""

    def __init__(self, message: str, code: int, *, http_status: int | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """Worth retrying: the node is unreachable or answered 503."""
        return self.http_status is None or self.http_status == 503


class CertificateError(CliError):
    """The node's https certificate could not be verified: asking again will not help."""

    @property
    def transient(self) -> bool:
        return False


# ---- HTTP ---------------------------------------------------------------------------------------------
class Api:
    def __init__(self, url: str | list[str], token: str | None = None, *, ssl_context: ssl.SSLContext | None = None):
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        self._at = 0            # the node asked now; the next one after it could not be reached
        self.token = token      # sent as Authorization: Bearer (see find_token)
        self.ssl_context = ssl_context   # checks an https node's certificate (None: the system's CAs)

    @property
    def url(self) -> str:
        return self.urls[self._at]

    def action(self, action: str, *, timeout_s: float = 30.0, post: bool = False, **params: Any) -> dict:
        query = {"action": action, **{k: str(v) for k, v in params.items() if v is not None}}
        data = urllib.parse.urlencode(query)
        if post:  # inputs can be large: send them in the body, not the URL
            return self.get_json(f"{self.url}/POD/", timeout_s, data.encode())
        return self.get_json(f"{self.url}/POD/?{data}", timeout_s)

    def post_json(self, action: str, body: dict[str, Any], *, timeout_s: float = 30.0) -> dict:
        """POST the action with a JSON object body (lists such as newExecutions' inputs go as they are)."""
        return self.get_json(f"{self.url}/POD/", timeout_s, json.dumps({"action": action, **body}).encode(),
                             content_type="application/json")

    def get_json(self, url: str, timeout_s: float, body: bytes | None = None, *,
                 content_type: str | None = None) -> dict:
        headers = {"Content-Type": content_type} if content_type else {}
        with self._open(url, timeout_s, body, headers) as resp:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException) as err:
                raise CliError(f"cannot reach {self.url}: {err}\n{UNREACHABLE_HINT}", EXIT_SERVER) from None
        return _decode(raw)

    def events(self, exec_id: int, *, follow: bool = True, last_event_id: str | None = None,
               read_timeout_s: float = STREAM_READ_TIMEOUT_S) -> Iterator[Event]:
        """The Server-Sent Events of an execution's output stream (GET /POD/executions/ID/stream), parsed by
        sseclient-py as they come; from after `last_event_id` when given. A connection that fails or stays
        silent past read_timeout_s (the node sends a keep-alive every 10 s) is a transient CliError."""
        url = f"{self.url}/POD/executions/{exec_id}/stream" + ("" if follow else "?follow=0")
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        with self._open(url, read_timeout_s, None, headers) as resp:
            try:
                yield from SSEClient(resp).events()
            except (OSError, http.client.HTTPException) as err:
                raise CliError(f"the stream from {self.url} broke off: {err or type(err).__name__}",
                               EXIT_SERVER) from None

    def _open(self, url: str, timeout_s: float, body: bytes | None, headers: dict[str, str]):
        """urlopen with the token and the TLS context; HTTP errors and failures to connect as CliErrors."""
        if self.token:
            headers = {"Authorization": f"Bearer {self.token}", **headers}
        try:
            return urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers),
                                          timeout=timeout_s, context=self.ssl_context)
        except urllib.error.HTTPError as err:
            error = _http_error(err)
            if err.code == 401 and not self.token:
                error.message += f"\n{NO_TOKEN_HINT}"
            raise error from None
        except (OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise CertificateError(f"cannot verify the certificate of {self.url}: {reason.verify_message}\n"
                                       f"{CACERT_HINT}", EXIT_SERVER) from None
            unreachable = self.url
            self._at = (self._at + 1) % len(self.urls)   # a retry asks the next node
            raise CliError(f"cannot reach {unreachable}: {reason}\n{UNREACHABLE_HINT}", EXIT_SERVER) from None


def _decode(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise CliError(f"the node answered something that is not JSON: {raw[:200]!r}", EXIT_SERVER) from None


def _http_error(err: urllib.error.HTTPError) -> CliError:
    raw = err.read()
    try:
        message = json.loads(raw or b"{}").get("error") or f"HTTP {err.code}"
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip() or f"HTTP {err.code} {err.reason}"
    retry_after = err.headers.get("Retry-After") if err.headers else None
    try:
        retry_s = float(retry_after) if retry_after else None
    except ValueError:
        retry_s = None
    return CliError(message, EXIT_USAGE if err.code < 500 else EXIT_SERVER, http_status=err.code,
                    retry_after_s=retry_s)


def retrying(call: Callable[[], dict], budget_s: float = RETRY_BUDGET_S) -> dict:
    """Run `call`, retrying 503s and connection failures for up to `budget_s`, honoring Retry-After."""
    deadline = time.monotonic() + budget_s
    pause = 0.25
    said = False
    while True:
        try:
            return call()
        except CliError as err:
            left = deadline - time.monotonic()
            if not err.transient or left <= 0:
                raise
            if err.http_status is None and not said and left > 1.0:   # not silent for seconds: say why at once
                print(f"pod: {err.message.splitlines()[0]}; trying again for up to {left:.0f} s", file=sys.stderr,
                      flush=True)
                said = True
            time.sleep(min(err.retry_after_s or pause, left))
            pause = min(pause * 2, 2.0)
