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


def test_parameters_come_from_the_settings_and_old_hashes_still_verify() -> None:
    from alchemist.config import Settings

    old = PasswordVault().hash("correct horse")  # argon2-cffi's defaults: 64 MiB, t=3, p=4
    owasp = PasswordVault.from_settings(
        Settings(ARGON2_MEMORY_KIB=19_456, ARGON2_TIME_COST=2, ARGON2_PARALLELISM=1, LOGIN_CONCURRENCY=1)
    )
    new = owasp.hash("correct horse")
    assert (extract_parameters(new).memory_cost, extract_parameters(new).time_cost) == (19_456, 2)
    assert extract_parameters(new).parallelism == 1
    assert owasp.verify(old, "correct horse")  # the hash carries its own parameters
    assert owasp.needs_rehash(old)
    assert not owasp.needs_rehash(new)
    assert not owasp.needs_rehash("not-a-hash")
    assert owasp.memory_kib == 19_456


def test_hashing_runs_on_at_most_concurrency_threads() -> None:
    import threading

    vault = PasswordVault(concurrency=2)
    stored = vault.hash("correct horse")
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(vault.verify(stored, "correct horse")))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 6
    argon2_threads = {t.name for t in threading.enumerate() if t.name.startswith("argon2")}
    assert 1 <= len(argon2_threads) <= 2
