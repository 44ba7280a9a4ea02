from argon2 import extract_parameters

from alchemist.auth.passwords import PasswordVault

vault = PasswordVault()


def test_hash_is_argon2id_salted_and_not_the_password() -> None:
    first, second = vault.hash("correct horse"), vault.hash("correct horse")
    assert first.startswith("$argon2id$")
    assert "correct horse" not in first
    assert first != second


def test_verify_accepts_the_password_and_rejects_others() -> None:
    stored = vault.hash("correct horse")
    assert vault.verify(stored, "correct horse")
    assert not vault.verify(stored, "correct hors")
    assert not vault.verify(stored, "")


def test_unknown_user_is_rejected_even_with_the_decoy_password() -> None:
    assert not vault.verify(None, "decoy password for unknown users")


def test_decoy_costs_the_same_as_a_real_hash() -> None:
    # Equal parameters mean equal work: an unknown user is as slow as a wrong password.
    assert extract_parameters(vault.decoy_hash) == extract_parameters(vault.hash("x" * 12))


def test_a_broken_stored_hash_is_a_rejection_not_a_crash() -> None:
    assert not vault.verify("not-a-hash", "anything")
