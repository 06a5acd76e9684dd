"""Group commit of issuances (ADR 0136): concurrent enrollments share one registry unit and one
audit fsync, and still succeed or fail one by one. The batch is made certain by holding the
registry's write lock while the requests arrive, so that they all queue behind it."""

from __future__ import annotations

import threading

from pki.csr import check_csr
from provisioning.errors import RefusedError
from tests.provisioning.conftest import OTHER, Env, csr_for, new_key
from tests.support.net import wait_for


def test_refusals_inside_one_batch_roll_back_alone_and_a_token_used_five_times_issues_once(
    env: Env,
) -> None:
    devices = [f"acme/plant1/batch/line1/cell1/gw-{i:02d}" for i in range(12)]
    for device in devices:
        env.add_device(device)
    tokens = [env.token(device) for device in devices]
    # Every third CSR names another device: the CA refuses it after its token was consumed in
    # the shared unit. Four more requests replay gw-01's token with good CSRs.
    requests = [
        (t, csr_for(new_key(), san=OTHER if i % 3 == 0 else None)) for i, t in enumerate(tokens)
    ]
    requests += [(tokens[1], csr_for(new_key())) for _ in range(4)]
    service = env.services.enrollment
    ledger_before, rounds_before = len(env.ca.ledger.entries()), service.committer.rounds
    outcomes: dict[int, str] = {}

    def enroll(n: int, token: str, csr: bytes) -> None:
        try:
            result = service.enroll(
                token, check_csr(csr, service.key_policy), now=env.now(), client="test"
            )
            outcomes[n] = result.identity.path
        except RefusedError as exc:
            outcomes[n] = f"refused: {exc.code}"

    threads = [
        threading.Thread(target=enroll, args=(n, token, csr))
        for n, (token, csr) in enumerate(requests)
    ]
    with env.registry.unit():  # the committer's first unit waits here; the rest queue
        for thread in threads:
            thread.start()
        wait_for(lambda: service.committer.pending == len(requests), what="every job queued")
    for thread in threads:
        thread.join()

    assert service.committer.rounds - rounds_before <= 2  # 16 requests, at most two batches
    issued = sorted(v for v in outcomes.values() if not v.startswith("refused"))
    assert issued == sorted(d for i, d in enumerate(devices) if i % 3)  # gw-01 exactly once
    assert (
        sorted(v for v in outcomes.values() if v.startswith("refused"))
        == ["refused: bad-csr"] * 4 + ["refused: replayed"] * 4
    )
    assert len(env.ca.ledger.entries()) == ledger_before + len(issued)
    for i, device in enumerate(devices):
        token_used = env.registry.token(_jti(env, tokens[i])).used_at is not None  # type: ignore[union-attr]
        assert token_used == bool(i % 3)  # a refused issuance left its token unused
        certificates = env.registry.certificates(device)
        assert [c.status.value for c in certificates] == (["active"] if i % 3 else [])
    accepted = [r for r in env.audit_records() if r["action"] == "provisioning.enroll.accepted"]
    assert len(accepted) == len(issued)


def _jti(env: Env, token: str) -> str:
    return env.token_key.verify_enrollment(token, now=env.now()).token_id
