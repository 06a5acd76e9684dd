"""Operator tokens can be revoked (review S7): their ``jti`` is recorded when minted, an operator
puts one on the registry's deny-list (audited), and from then on every instance refuses it and
audits the refusal under the operator the token names."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.errors import UsageError
from provisioning.tokens import Role
from tests.provisioning.conftest import DEVICE, OTHER, Env
from tests.provisioning.test_operations import idmz


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _revoked_token_is_refused(issuer: Env, other_instance: Env) -> None:
    token, claims = issuer.services.operators.create_operator_token(
        operator="operator:lead", name="alice", role=Role.OPERATOR, now=issuer.now()
    )
    colleague, _ = issuer.services.operators.create_operator_token(
        operator="operator:lead", name="alice", role=Role.OPERATOR, now=issuer.now()
    )
    assert issuer.registry.token(claims.token_id) is not None  # the jti is recorded
    with issuer.client() as http:
        r = http.post("/v1/devices", json={"path": DEVICE}, headers=bearer(token))
        assert r.status_code == 201, r.text

    for _ in range(2):  # revoking twice is harmless and audited once
        issuer.services.operator_tokens.revoke_operator_token(
            operator="operator:lead", now=issuer.now(), token_id=claims.token_id
        )

    before = other_instance.snapshot()
    with other_instance.client() as http:
        r = http.post("/v1/devices", json={"path": OTHER}, headers=bearer(token))
        assert r.status_code == 401, r.text
        assert other_instance.snapshot() == before  # nothing registered
        refusal = other_instance.last_audit()
        # Another token of the same operator is unaffected.
        assert http.get("/v1/devices", headers=bearer(colleague)).status_code == 200
    assert (refusal["actor"], refusal["action"], refusal["outcome"]) == (
        "operator:alice",
        "provisioning.token.refused",
        "denied",
    )
    assert refusal["details"]["code"] == "token-revoked"
    assert claims.token_id in refusal["reason"] and token not in str(refusal)
    revoked = [r for r in issuer.audit_records() if r["action"] == "provisioning.token.revoked"]
    assert [(r["actor"], r["resource"], r["details"]["token_id"]) for r in revoked] == [
        ("operator:lead", "operator:alice", claims.token_id)
    ]


def test_revoked_operator_token_is_refused_and_audited(env: Env) -> None:
    _revoked_token_is_refused(env, env)


@pytest.mark.postgres
def test_operator_token_revoked_on_one_instance_is_refused_by_another(
    pg_env: Env, second_instance: Env
) -> None:
    _revoked_token_is_refused(pg_env, second_instance)


def test_revoking_an_unknown_or_dead_token_is_a_usage_error(env: Env) -> None:
    with pytest.raises(UsageError):
        env.services.operator_tokens.revoke_operator_token(
            operator="operator:lead", now=env.now(), token_id="nope"
        )
    with pytest.raises(UsageError):
        env.services.operator_tokens.revoke_operator_token(
            operator="operator:lead", now=env.now(), token="x.y.z"
        )


def test_operator_token_is_revoked_from_the_cli_by_id_or_from_stdin(tmp_path: Path) -> None:
    home = tmp_path / "home"
    idmz(home, "provisioning", "init")
    created = idmz(home, "provisioning", "token", "create", "--role", "operator", "--name", "bob")
    first_line, token = (
        created.stdout.strip().splitlines()[0],
        created.stdout.strip().splitlines()[-1],
    )
    jti = first_line.split("(id ")[1].split(",")[0]
    assert token not in first_line

    revoked = idmz(home, "provisioning", "token", "revoke", "--id", jti)
    assert jti in revoked.stdout and token not in revoked.stdout + revoked.stderr
    again = idmz(home, "provisioning", "token", "revoke", "--token-file", "-", stdin=token)
    assert jti in again.stdout
    unknown = idmz(home, "provisioning", "token", "revoke", "--id", "no-such-id", check=False)
    assert unknown.returncode == 2 and "--token-file" in unknown.stderr
