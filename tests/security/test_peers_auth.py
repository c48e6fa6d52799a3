"""The cluster secret's pure parts: the secret file, signed peer requests and the challenge a found member answers."""

from __future__ import annotations

import os
import stat

import pytest

from podnode.cluster_secret import (
    PEER_AUTH_HEADER,
    PeerAuthError,
    PeerVerifier,
    check_proof,
    load_or_create,
    new_challenge,
    prove_answer,
    sign_request,
)

SECRET = "s3cret-of-the-cluster"
NOW = 1_800_000_000.0


def test_the_secret_file_is_made_600_once_and_reused(tmp_path):
    path = tmp_path / "d" / "secret"
    secret, created = load_or_create(path)
    assert created and len(secret) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create(path) == (secret, False)
    os.chmod(path, 0o644)                      # readable by others: made 600 again
    assert load_or_create(path) == (secret, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret"]   # no temporary file left
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_or_create(path)


def test_a_signed_request_passes_once_and_only_as_signed():
    verifier = PeerVerifier(SECRET)
    headers = sign_request(SECRET, "POST", "/internal/join", b"node=n4&raftAddr=h:1", now=NOW)
    assert SECRET not in headers[PEER_AUTH_HEADER]
    verifier.check("POST", "/internal/join", b"node=n4&raftAddr=h:1", headers, now=NOW + 1)
    with pytest.raises(PeerAuthError, match="replayed"):
        verifier.check("POST", "/internal/join", b"node=n4&raftAddr=h:1", headers, now=NOW + 2)
    fresh = sign_request(SECRET, "POST", "/internal/join", b"node=n4&raftAddr=h:1", now=NOW)
    for method, path, body in (("GET", "/internal/join", b"node=n4&raftAddr=h:1"),
                               ("POST", "/internal/promote", b"node=n4&raftAddr=h:1"),
                               ("POST", "/internal/join", b"node=n4&raftAddr=evil:1")):
        with pytest.raises(PeerAuthError, match="wrong cluster secret"):
            PeerVerifier(SECRET).check(method, path, body, fresh, now=NOW)


@pytest.mark.parametrize("headers, why", [
    ({}, "no X-Pod-Peer-Auth"),
    ({"X-Pod-Secret": SECRET}, "no X-Pod-Peer-Auth"),                       # the secret itself is no credential
    ({PEER_AUTH_HEADER: SECRET}, "malformed"),
    ({PEER_AUTH_HEADER: "v1 ts=x nonce=a mac=b"}, "malformed"),
    ({PEER_AUTH_HEADER: "v1 ts=1 nonce=a mac=\u00e9"}, "malformed"),
    (sign_request("another secret", "GET", "/internal/executions/1/output", now=NOW), "wrong cluster secret"),
    (sign_request(SECRET, "GET", "/internal/executions/1/output", now=NOW - 120), "stale"),
    (sign_request(SECRET, "GET", "/internal/executions/1/output", now=NOW + 120), "stale"),
])
def test_requests_without_a_valid_signature_are_refused(headers, why):
    with pytest.raises(PeerAuthError, match=why):
        PeerVerifier(SECRET).check("GET", "/internal/executions/1/output", b"", headers, now=NOW)


def test_a_node_without_a_secret_takes_no_peer_request():
    with pytest.raises(PeerAuthError, match="no cluster secret"):
        PeerVerifier(None).check("GET", "/x", b"", sign_request(SECRET, "GET", "/x", now=NOW), now=NOW)


def test_nonces_are_forgotten_once_stale_and_bounded():
    verifier = PeerVerifier(SECRET, max_nonces=50)
    for i in range(200):
        verifier.check("GET", "/x", b"", sign_request(SECRET, "GET", "/x", now=NOW + i), now=NOW + i)
    assert len(verifier._seen) <= 50


def test_a_members_proof_binds_the_challenge_its_id_and_its_url():
    challenge = new_challenge()
    proof = prove_answer(SECRET, challenge, "n1", "http://127.0.0.1:8080")
    assert SECRET not in proof
    assert check_proof(SECRET, challenge, "n1", "http://127.0.0.1:8080", proof)
    assert not check_proof(SECRET, new_challenge(), "n1", "http://127.0.0.1:8080", proof)
    assert not check_proof(SECRET, challenge, "n2", "http://127.0.0.1:8080", proof)
    assert not check_proof(SECRET, challenge, "n1", "http://10.0.0.9:8080", proof)   # relayed by a rogue
    assert not check_proof("another secret", challenge, "n1", "http://127.0.0.1:8080", proof)
    assert not check_proof(SECRET, challenge, "n1", "http://127.0.0.1:8080", None)
    # A signed request's MAC is never a valid proof, and the reverse (each use has its own key).
    assert proof not in sign_request(SECRET, "POST", "/internal/prove", challenge.encode(), now=NOW)[PEER_AUTH_HEADER]
