"""TLS for the HTTP API and for the requests nodes make to each other (--tls-cert, --tls-key, --tls-ca).

The server side serves the node's certificate chain (TLS 1.2 or later). The client side, for peer requests,
checks the other node's certificate against --tls-ca when given, else the system's store, and checks its name:
peers are reached at the URL each one advertises (`NodeConfig.http_url`, the --advertise-host or the bind host,
most often an IP address), so a node's certificate must name that host: an IP SAN for an address, a DNS SAN for
a name. A file that is missing, unreadable or does not fit stops the node at start with a one-line error.
"""

from __future__ import annotations

import ssl

from .config import NodeConfig


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; the message names the file and what is wrong."""


def _no_passphrase() -> bytes:
    raise TlsError("the key is encrypted: give the node an unencrypted key (mode 600)")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The context a node serves https with: `cert` (PEM, the chain from the node's certificate up) and `key`."""
    for option, path, marker, what in (("--tls-cert", cert, "-----BEGIN CERTIFICATE-----", "PEM certificate"),
                                       ("--tls-key", key, "PRIVATE KEY-----", "PEM private key")):
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError as exc:
            raise TlsError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
        if marker.encode() not in text:
            raise TlsError(f"{option} {path}: it holds no {what}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except TlsError as exc:
        raise TlsError(f"--tls-key {key}: {exc}") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"--tls-key {key} is not the key of --tls-cert {cert}") from None
        raise TlsError(f"--tls-cert {cert} with --tls-key {key}: cannot use them ({exc.reason or exc})") from None
    except OSError as exc:   # the file went away since it was read
        raise TlsError(f"cannot read {exc.filename or cert} ({exc.strerror or exc})") from None
    return ctx


def client_context(ca: str | None = None, *, option: str = "--tls-ca") -> ssl.SSLContext:
    """The context to reach https nodes with: their certificate checked against the PEM bundle `ca` (else the
    system's store), and the host name of the URL against the certificate's names. `option`: what an error
    calls the file."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except OSError as exc:   # a missing file; ssl.SSLError: not a PEM bundle of certificates
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise TlsError(f"{option} {ca}: cannot use it as a CA bundle ({why})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def peer_context(cfg: NodeConfig) -> ssl.SSLContext | None:
    """The context of this node's requests to other nodes: None (aiohttp's default: the system's store) unless
    the node serves https or was given --tls-ca."""
    if not (cfg.tls_cert or cfg.tls_ca):
        return None
    return client_context(cfg.tls_ca)


def check(cfg: NodeConfig) -> None:
    """At start: every TLS file given is usable, or SystemExit saying which one is not and why."""
    try:
        if cfg.tls_cert and cfg.tls_key:
            server_context(cfg.tls_cert, cfg.tls_key)
        peer_context(cfg)
    except TlsError as exc:
        raise SystemExit(f"podnode: {exc}") from None
