"""signed-note and checkpoint parsing: known answers, and hostile input only ever raises our
verification errors (never a crash, never an acceptance)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from audit.errors import AuditError, CheckpointError
from audit.merkle import leaf_hash
from audit.note import COSIGNATURE_V1, Cosigner, NoteSigner, VerifierKey, open_note
from audit.proof import verify_proof
from audit.witness import parse_request

# C2SP signed-note example verifier key: the key ID must be derived from name and key.
EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
ORIGIN = "plant1.example/idmz-audit"


def test_example_verifier_key_round_trips_with_its_derived_key_id() -> None:
    key = VerifierKey.parse(EXAMPLE_VKEY)
    assert key.key_id.hex() == "530d903a" and key.vkey == EXAMPLE_VKEY


def test_verifier_key_with_a_wrong_key_id_is_refused() -> None:
    with pytest.raises(AuditError):
        VerifierKey.parse(EXAMPLE_VKEY.replace("530d903a", "530d903b"))


def test_signature_from_an_unknown_key_is_ignored_but_one_trusted_signature_is_needed() -> None:
    log, stranger = NoteSigner.generate(ORIGIN), NoteSigner.generate("stranger.example/x")
    body = Checkpoint(ORIGIN, 1, leaf_hash(b"a")).body()
    note = log.sign_note(body) + stranger.signature_line(body)
    assert open_note(note, [log.verifier]).signers == (ORIGIN,)
    with pytest.raises(CheckpointError):
        open_note(stranger.sign_note(body), [log.verifier])


def test_cosignature_binds_the_timestamp() -> None:
    log = NoteSigner.generate(ORIGIN)
    witness = Cosigner("it.example/w", NoteSigner.generate("it.example/w").private_key)
    body = Checkpoint(ORIGIN, 3, leaf_hash(b"a")).body()
    line = witness.signature_line(body, timestamp=1_700_000_000)
    note = log.sign_note(body) + line
    assert open_note(note, [log.verifier, witness.verifier]).cosignatures == (
        ("it.example/w", 1_700_000_000),
    )
    blob = line.split()[-1]
    later = blob[:8] + ("B" if blob[8] == "A" else "A") + blob[9:]  # edit the timestamp
    forged = line.replace(blob, later)
    with pytest.raises(AuditError):
        open_note(log.sign_note(body) + forged, [log.verifier, witness.verifier])


def test_checkpoint_with_another_origin_is_refused_even_if_signed() -> None:
    signer = NoteSigner.generate("other.example/log")
    note = signer.sign_note(Checkpoint("other.example/log", 1, leaf_hash(b"a")).body())
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, VerifierKey(ORIGIN, 1, signer.verifier.public_key))


SIGNER = NoteSigner.generate(ORIGIN)
GOOD = sign_checkpoint(Checkpoint(ORIGIN, 5, leaf_hash(b"x")), SIGNER)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=0, max_value=len(GOOD)))
def test_hostile_notes_raise_only_verification_errors(junk: str, cut: int) -> None:
    for text in (junk, GOOD[:cut] + junk, GOOD[:cut] + junk + GOOD[cut:]):
        try:
            verify_checkpoint(text, SIGNER.verifier)
        except AuditError:
            continue
        assert text == GOOD or text.startswith(GOOD)  # only the genuine note verifies


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_witness_requests_and_proofs_raise_only_our_errors(junk: bytes) -> None:
    with pytest.raises(AuditError):
        parse_request(junk) if not junk.startswith(b"old ") else parse_request(b"\xff" + junk)
    with pytest.raises(AuditError):
        verify_proof(junk.decode("utf-8", "replace"), SIGNER.verifier)


def _witnessed(
    witnesses: tuple[Cosigner, ...], *, timestamp: int = 1_796_598_027
) -> tuple[str, str, VerifierKey]:
    """A checkpoint note signed by a fresh log key, and one cosignature line per witness."""
    log = NoteSigner.generate(ORIGIN)
    checkpoint = Checkpoint(ORIGIN, 5, leaf_hash(b"x"))
    lines = "".join(w.signature_line(checkpoint.body(), timestamp=timestamp) for w in witnesses)
    return sign_checkpoint(checkpoint, log), lines, log.verifier


def _cosigner(name: str) -> Cosigner:
    return Cosigner(name, NoteSigner.generate(name).private_key)


def test_repeated_cosignature_line_meeting_the_quorum_is_refused() -> None:
    one, two = _cosigner("witness-one.example"), _cosigner("witness-two.example")
    note, line, log_key = _witnessed((one,))
    keys = [one.verifier, two.verifier]
    with pytest.raises(CheckpointError, match="1 valid cosignatures, 2 required"):
        verify_checkpoint(note + line + line, log_key, witness_keys=keys, min_cosigners=2)
    # Counted once, and listed once, when one cosignature is all that is asked.
    signed = verify_checkpoint(note + line + line, log_key, witness_keys=keys, min_cosigners=1)
    assert signed.cosigners == (("witness-one.example", 1_796_598_027),)


def test_one_witness_key_under_two_names_meeting_the_quorum_is_refused() -> None:
    one = _cosigner("witness-one.example")
    alias = Cosigner("witness-two.example", one.private_key)  # the same key, another name
    note, lines, log_key = _witnessed((one, alias))
    keys = [one.verifier, alias.verifier]
    with pytest.raises(CheckpointError, match="1 valid cosignatures, 2 required"):
        verify_checkpoint(note + lines, log_key, witness_keys=keys, min_cosigners=2)
    assert open_note(note + lines, [log_key, *keys]).cosignatures == (
        ("witness-one.example", 1_796_598_027),
    )


def test_two_distinct_witnesses_meet_a_two_witness_quorum() -> None:
    one, two = _cosigner("witness-one.example"), _cosigner("witness-two.example")
    note, lines, log_key = _witnessed((one, two))
    signed = verify_checkpoint(
        note + lines, log_key, witness_keys=[one.verifier, two.verifier], min_cosigners=2
    )
    assert [name for name, _ in signed.cosigners] == ["witness-one.example", "witness-two.example"]


def test_log_key_posing_as_a_witness_is_refused() -> None:
    note, _, log_key = _witnessed(())
    posing = VerifierKey("witness-one.example", COSIGNATURE_V1, log_key.public_key)
    with pytest.raises(CheckpointError, match="log key"):
        verify_checkpoint(note, log_key, witness_keys=[posing], min_cosigners=1)
