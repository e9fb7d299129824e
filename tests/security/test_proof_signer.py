"""Finding 4 (issue 26): `lifecycle proof verify FILE` said `valid` for a certificate signed by any
key, trusting the key carried inside the file. Now it needs a key it was given (``--public-key``
or ``LIFECYCLE_PROOF_TRUST_FILE``); without one it says the signer is unverified and exits 2."""

from __future__ import annotations

import os
import subprocess
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifecycle import proofs


def _certificate_signed_by_a_stranger(path):
    body = {"format": proofs.FORMAT_V1, "request_id": "00000000-0000-4000-8000-000000000001", "stores": [],
            "completed_at": "2026-01-01T00:00:00Z", "items_erased": 0, "keys_destroyed_at": None}
    key = Ed25519PrivateKey.generate()
    path.write_bytes(proofs.sign(body, key))
    return key


def _verify(tmp_path, *args, env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    return subprocess.run([sys.executable, "-m", "lifecycle", "proof", "verify", *args],
                          env={**clean, "LIFECYCLE_STATE_DIR": str(tmp_path / "auditor"), **(env or {})},
                          capture_output=True, timeout=60)


def test_a_certificate_signed_by_any_key_is_not_called_valid(tmp_path):
    cert = tmp_path / "cert.json"
    _certificate_signed_by_a_stranger(cert)
    out = _verify(tmp_path, str(cert))
    assert out.returncode == 2, out
    assert b"valid" not in out.stdout and b"UNVERIFIED SIGNER" in out.stderr


def test_it_verifies_against_a_key_it_was_given_on_the_line_or_in_the_trust_file(tmp_path):
    cert = tmp_path / "cert.json"
    key = _certificate_signed_by_a_stranger(cert)
    published = tmp_path / "pipeline.pub"
    published.write_text(proofs.public_key_text(key)["public_key"])
    assert _verify(tmp_path, str(cert), "--public-key", str(published)).returncode == 0
    assert _verify(tmp_path, str(cert), env={"LIFECYCLE_PROOF_TRUST_FILE": str(published)}).returncode == 0
    other = tmp_path / "other.pub"
    other.write_text(proofs.public_key_text(Ed25519PrivateKey.generate())["public_key"])
    assert _verify(tmp_path, str(cert), env={"LIFECYCLE_PROOF_TRUST_FILE": str(other)}).returncode == 1
