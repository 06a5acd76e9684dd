"""Bad input, one test per attack: each gets a 4xx with a generic message, nothing is issued,
the registry is unchanged, and the audit log records the precise reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pki.csr import verify_csr
from pki.keys import KeyPolicy
from pki.profiles import ProfileName
from provisioning.tokens import TokenKey
from tests.provisioning.conftest import (
    DEVICE,
    OTHER,
    Env,
    assert_refused,
    csr_for,
    new_key,
    write_credentials,
)

ENROLL = "provisioning.enroll.refused"
RENEW = "provisioning.renew.refused"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def post_enroll(env: Env, token: str, csr: str | None = None, **extra: object) -> object:
    with env.client() as http:
        return http.post(
            "/v1/enroll",
            json={"csr": csr or csr_for(new_key()).decode(), **extra},
            headers={"Authorization": f"Bearer {token}"},
        )


def test_replayed_enrollment_token_is_refused(env: Env) -> None:
    env.add_device()
    token = env.token()
    assert post_enroll(env, token).status_code == 201  # type: ignore[attr-defined]
    before = env.snapshot()
    r = post_enroll(env, token)
    record = assert_refused(env, before, r, action=ENROLL, reason="already used")  # type: ignore[arg-type]
    assert record["details"]["code"] == "replayed"
    assert r.json() == {
        "error": "unauthorized",
        "detail": "the token is not valid for this request",
    }  # type: ignore[attr-defined]


def test_expired_enrollment_token_is_refused(env: Env) -> None:
    env.add_device()
    token, _ = env.services.operators.create_enrollment_token(
        operator="t", now=env.now() - timedelta(hours=2), device=DEVICE, ttl_s=60
    )
    before = env.snapshot()
    assert_refused(env, before, post_enroll(env, token), action=ENROLL, reason="expired")  # type: ignore[arg-type]


def test_token_for_another_device_is_refused(env: Env) -> None:
    env.add_device()
    env.add_device(OTHER)
    token = env.token(DEVICE)
    before = env.snapshot()
    r = post_enroll(env, token, identity=OTHER)
    assert_refused(env, before, r, action=ENROLL, reason=f"is bound to {DEVICE}")  # type: ignore[arg-type]
    assert env.registry.token(claims_of(token)["jti"]).used_at is None  # type: ignore[arg-type,union-attr]


def test_csr_naming_another_device_is_refused(env: Env) -> None:
    env.add_device()
    token = env.token(DEVICE)
    before = env.snapshot()
    r = post_enroll(env, token, csr=csr_for(new_key(), san=OTHER).decode())
    assert_refused(env, before, r, action=ENROLL, reason="CSR names")  # type: ignore[arg-type]


def test_forged_token_with_alg_none_is_refused(env: Env) -> None:
    env.add_device()
    claims = claims_of(env.token())
    forged = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}."
    before = env.snapshot()
    assert_refused(
        env, before, post_enroll(env, forged), action=ENROLL, reason="not the pinned EdDSA"
    )  # type: ignore[arg-type]


def test_forged_token_hs256_with_the_public_key_as_secret_is_refused(env: Env) -> None:
    env.add_device()
    claims = claims_of(env.token())
    public = env.token_key._public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    before = env.snapshot()
    r = post_enroll(env, f"{signing_input}.{b64(signature)}")
    assert_refused(env, before, r, action=ENROLL, reason="not the pinned EdDSA")  # type: ignore[arg-type]


def test_forged_token_signed_with_another_key_is_refused(env: Env) -> None:
    env.add_device()
    forged, _ = TokenKey.generate().mint_enrollment(f"device:{DEVICE}", ttl_s=600, now=env.now())
    before = env.snapshot()
    assert_refused(
        env, before, post_enroll(env, forged), action=ENROLL, reason="signature does not verify"
    )  # type: ignore[arg-type]


def test_token_with_tampered_claims_is_refused(env: Env) -> None:
    env.add_device()
    env.add_device(OTHER)
    header, payload, signature = env.token(DEVICE).split(".")
    claims = claims_of(f"{header}.{payload}.{signature}")
    claims["sub"] = f"device:{OTHER}"
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    before = env.snapshot()
    assert_refused(
        env, before, post_enroll(env, tampered), action=ENROLL, reason="signature does not verify"
    )  # type: ignore[arg-type]


def test_missing_token_is_refused(env: Env) -> None:
    env.add_device()
    before = env.snapshot()
    with env.client() as http:
        r = http.post("/v1/enroll", json={"csr": csr_for(new_key()).decode()})
    assert_refused(env, before, r, action=ENROLL, reason="no bearer token")
    assert r.headers["www-authenticate"] == "Bearer"


def test_malformed_csr_is_refused_and_the_token_stays_unused(env: Env) -> None:
    env.add_device()
    token = env.token()
    before = env.snapshot()
    r = post_enroll(
        env,
        token,
        csr="-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
    )
    assert_refused(env, before, r, action=ENROLL, reason="could not parse")  # type: ignore[arg-type]
    assert r.json()["error"] == "bad_request"  # type: ignore[attr-defined]
    assert env.registry.token(claims_of(token)["jti"]).used_at is None  # type: ignore[arg-type,union-attr]


def test_oversized_csr_is_refused(env: Env) -> None:
    env.add_device()
    before = env.snapshot()
    r = post_enroll(env, env.token(), csr="A" * 20_000)
    assert_refused(env, before, r, action=ENROLL, reason="the limit is")  # type: ignore[arg-type]


def test_csr_with_a_weak_rsa_key_is_refused(env: Env) -> None:
    env.add_device()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the attack under test
    before = env.snapshot()
    r = post_enroll(env, env.token(), csr=csr_for(weak).decode())
    assert_refused(env, before, r, action=ENROLL, reason="RSA key of at least")  # type: ignore[arg-type]


def test_csr_with_a_bad_proof_of_possession_is_refused(env: Env) -> None:
    env.add_device()
    good = csr_for(new_key())
    from cryptography import x509

    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # flip a bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    before = env.snapshot()
    assert_refused(
        env,
        before,
        post_enroll(env, env.token(), csr=tampered),
        action=ENROLL,
        reason="proof of possession",
    )  # type: ignore[arg-type]


def test_unregistered_device_gets_no_token_and_revoked_device_is_refused(env: Env) -> None:
    env.add_device()
    token = env.token()
    env.services.operators.revoke_device(DEVICE, operator="t", now=env.now())
    before = env.snapshot()
    r = post_enroll(env, token)
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert_refused(env, before, r, action=ENROLL, reason="is revoked")  # type: ignore[arg-type]


def _renew(env: Env, creds: Path) -> object:
    with env.client(cert=creds / "cert.pem", key=creds / "key.pem") as http:
        return http.post("/v1/renew", json={"csr": csr_for(new_key()).decode()})


def test_renewal_with_a_revoked_certificate_is_refused(env: Env, tmp_path: Path) -> None:
    creds = env.enrolled_device(tmp_path / "gw")
    env.services.operators.revoke_device(DEVICE, operator="t", now=env.now())
    before = env.snapshot()
    r = _renew(env, creds)
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert_refused(env, before, r, action=RENEW, reason="is revoked")  # type: ignore[arg-type]


def _expired_credentials(env: Env, directory: Path, *, days_ago: int) -> Path:
    """A device whose current certificate expired ``days_ago`` days ago (issued by the real CA)."""
    env.add_device()
    key = new_key()
    past = env.now() - timedelta(days=days_ago + 10)
    from pki.identity import DeviceIdentity

    issued = env.ca.issue(
        verify_csr(csr_for(key), KeyPolicy()),
        DeviceIdentity.parse(DEVICE),
        profile=ProfileName.DEVICE,
        now=past,
        validity=timedelta(days=10),
    )
    with env.registry.unit() as u:
        u.record_certificate(
            serial=issued.serial_hex,
            device_path=DEVICE,
            fingerprint=issued.fingerprint,
            not_before=past,
            not_after=issued.not_after,
            via="enroll",
            now=past,
        )
        u.set_device_status(DEVICE, "enrolled", now=past)
    write_credentials(
        directory,
        key,
        {
            "certificate": issued.leaf_pem().decode(),
            "chain": issued.chain_pem().decode(),
            "root": issued.root_pem().decode(),
        },
    )
    return directory


def test_renewal_with_an_expired_certificate_is_refused(env: Env, tmp_path: Path) -> None:
    creds = _expired_credentials(env, tmp_path / "gw", days_ago=3)
    before = env.snapshot()
    r = _renew(env, creds)
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert_refused(env, before, r, action=RENEW, reason="days of grace")  # type: ignore[arg-type]


def test_renewal_after_expiry_is_allowed_within_the_groups_grace(env: Env, tmp_path: Path) -> None:
    env.services.operators.add_group(
        "acme/plant1/press", operator="t", now=env.now(), renewal_grace_days=30
    )
    creds = _expired_credentials(env, tmp_path / "gw", days_ago=3)
    r = _renew(env, creds)
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    record = env.last_audit()
    assert (
        record["action"] == "provisioning.renew.accepted"
        and record["details"]["expired_within_grace"] is True
    )


def test_renewal_without_a_client_certificate_is_refused(env: Env) -> None:
    before = env.snapshot()
    with env.client() as http:
        r = http.post("/v1/renew", json={"csr": csr_for(new_key()).decode()})
    assert r.status_code == 401
    assert_refused(env, before, r, action=RENEW, reason="no client certificate")


def test_unknown_route_is_a_json_404(env: Env) -> None:
    with env.client() as http:
        r = http.get("/v1/../../etc/passwd")
        r2 = http.post("/v1/nothing-here", json={})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert r2.status_code == 404 and r2.headers["content-type"] == "application/json"


def test_huge_body_is_refused_with_413_before_parsing(env: Env) -> None:
    env.add_device()
    before = env.snapshot()
    with env.client() as http:
        r = http.post(
            "/v1/enroll",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {env.token()}"},
        )
        chunked = http.post(
            "/v1/enroll",
            content=iter([b"x" * 65536] * 4),
            headers={"Content-Type": "application/json"},
        )
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert chunked.status_code == 413
    assert (
        env.snapshot().ledger == before.ledger
        and env.snapshot().certificates == before.certificates
    )


def test_operator_api_requires_the_role(env: Env) -> None:
    auditor, _ = env.services.operators.create_operator_token(
        operator="t",
        name="alice",
        role=__import__("provisioning.tokens").tokens.Role.AUDITOR,
        now=env.now(),
    )
    with env.client() as http:
        listed = http.get("/v1/devices", headers={"Authorization": f"Bearer {auditor}"})
        denied = http.post(
            "/v1/devices", json={"path": DEVICE}, headers={"Authorization": f"Bearer {auditor}"}
        )
        env.add_device(OTHER)
        enroll_token = env.token(OTHER)
        wrong_kind = http.get("/v1/devices", headers={"Authorization": f"Bearer {enroll_token}"})
    assert listed.status_code == 200
    assert denied.status_code == 403
    assert wrong_kind.status_code == 401
    assert env.registry.device(DEVICE) is None


def test_enrollment_body_that_does_not_match_the_schema_is_refused_and_audited(env: Env) -> None:
    env.add_device()
    before = env.snapshot()
    with env.client() as http:
        r = http.post(
            "/v1/enroll",
            json={"certificate_request": 42},
            headers={"Authorization": f"Bearer {env.token()}"},
        )
    assert r.status_code == 422
    assert_refused(env, before, r, action=ENROLL, reason="does not match the API schema")


def test_operator_registers_mints_and_revokes_over_the_api(env: Env, tmp_path: Path) -> None:
    from provisioning.tokens import Role

    operator, _ = env.services.operators.create_operator_token(
        operator="t", name="bob", role=Role.OPERATOR, now=env.now()
    )
    auth = {"Authorization": f"Bearer {operator}"}
    with env.client() as http:
        assert (
            http.post(
                "/v1/devices", json={"path": DEVICE, "asset": "press 7"}, headers=auth
            ).status_code
            == 201
        )
        minted = http.post("/v1/tokens", json={"device": DEVICE, "ttl_s": 600}, headers=auth)
        assert minted.status_code == 201
        assert env.enroll(token=minted.json()["token"]).status_code == 201
        revoked = http.post(
            "/v1/revocations", json={"path": DEVICE, "reason": "key-compromise"}, headers=auth
        )
        assert revoked.status_code == 200 and len(revoked.json()["serials"]) == 1
        again = http.post("/v1/devices", json={"path": DEVICE}, headers=auth)
    assert again.status_code == 400
    assert env.registry.device(DEVICE).status == "revoked"  # type: ignore[union-attr]
    actors = {
        r["actor"] for r in env.audit_records() if r["action"].startswith("provisioning.device.")
    }
    assert actors == {"bob"}


def test_no_usable_certificate_exists_when_the_audit_log_cannot_record_it(env: Env) -> None:
    env.add_device()
    token = env.token()
    env.audit.close()  # the audit log is unavailable from here on
    r = post_enroll(env, token)
    assert r.status_code == 503  # type: ignore[attr-defined]
    [cert] = env.registry.certificates(DEVICE)
    assert cert.status == "revoked"
    entry = env.ca.lookup(int(cert.serial, 16))
    assert entry is not None and entry.revoked_at is not None
    assert env.registry.device(DEVICE).status == "registered"  # type: ignore[union-attr]


def test_operator_change_that_cannot_be_audited_is_not_committed(env: Env) -> None:
    import pytest

    from provisioning.errors import UpstreamError

    env.audit.close()
    with pytest.raises(UpstreamError):
        env.services.operators.add_device(DEVICE, operator="t", now=env.now())
    assert env.registry.device(DEVICE) is None


def test_certificate_left_pending_by_a_crash_is_withdrawn(env: Env) -> None:
    from pki.identity import DeviceIdentity
    from provisioning.retirement import withdraw_stale_pending

    env.add_device()
    past = env.now() - timedelta(hours=1)
    issued = env.ca.issue(
        verify_csr(csr_for(new_key()), KeyPolicy()),
        DeviceIdentity.parse(DEVICE),
        profile=ProfileName.DEVICE,
        now=past,
    )
    with env.registry.unit() as u:  # what a crash between issuance and activation leaves behind
        u.record_certificate(
            serial=issued.serial_hex,
            device_path=DEVICE,
            fingerprint=issued.fingerprint,
            not_before=past,
            not_after=issued.not_after,
            via="enroll",
            now=past,
            status="pending",
        )
    assert withdraw_stale_pending(env.ca, env.registry, env.audit, now=env.now()) == [
        issued.serial_hex
    ]
    assert env.registry.certificate(issued.serial_hex).status == "revoked"  # type: ignore[union-attr]
    assert env.ca.lookup(issued.serial).revoked_at is not None  # type: ignore[union-attr]
    assert env.last_audit()["action"] == "pki.cert.revoked"
    assert withdraw_stale_pending(env.ca, env.registry, env.audit, now=env.now()) == []
