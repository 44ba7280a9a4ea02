"""The README's newcomer path: add a user, start `alchemist auth`, log in, validate."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from sqlalchemy.engine import URL

from .conftest import alchemist, free_port, running


def test_newcomer_adds_a_user_logs_in_and_validates(embedded_env: dict[str, str], tmp_path: Path) -> None:
    added = alchemist(
        "users",
        "add",
        "Ann@Example.com",
        "--password-stdin",
        env=embedded_env,
        stdin="a long secret\n",
    )
    assert added.returncode == 0, added.stderr
    assert "added ann@example.com" in added.stdout
    listed = alchemist("users", "list", env=embedded_env)
    assert listed.stdout.startswith("ann@example.com\tuser")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["auth", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, embedded_env, f"{base}/healthz", tmp_path / "auth.log"):
        token = httpx.post(f"{base}/login", auth=("ann@example.com", "a long secret")).text
        claims = httpx.post(f"{base}/validate", headers={"Authorization": f"Bearer {token}"})
        assert claims.status_code == 200
        assert claims.json()["username"] == "ann@example.com"
        assert httpx.get(f"{base}/readyz").json() == {"status": "ok"}

    database = Path(embedded_env["ALCHEMIST_DATA_DIR"]) / "alchemist.db"
    assert b"a long secret" not in database.read_bytes()
    with sqlite3.connect(database) as connection:
        (stored,) = connection.execute("SELECT password_hash FROM user").fetchone()
    assert stored.startswith("$argon2id$")


def test_users_cli_refuses_bad_input_and_removes(embedded_env: dict[str, str]) -> None:
    def add(email: str, password: str) -> tuple[int, str]:
        done = alchemist("users", "add", email, "--password-stdin", env=embedded_env, stdin=password + "\n")
        return done.returncode, done.stderr

    assert add("not-an-email", "long enough 1") == (
        1,
        "alchemist users add: 'not-an-email' is not an email address\n",
    )
    assert add("ann@example.com", "short")[1].endswith("at least 8 characters\n")
    assert add("ann@example.com", "long enough 1")[0] == 0
    assert add("ann@example.com", "long enough 2")[1].endswith("already exists\n")
    assert alchemist("users", "remove", "ann@example.com", env=embedded_env).returncode == 0
    gone = alchemist("users", "remove", "ann@example.com", env=embedded_env)
    assert (gone.returncode, gone.stderr) == (
        1,
        "alchemist users remove: no user ann@example.com\n",
    )


def test_users_passwd_resets_a_forgotten_password(embedded_env: dict[str, str], tmp_path: Path) -> None:
    def passwd(email: str, password: str) -> tuple[int, str, str]:
        done = alchemist(
            "users", "passwd", email, "--password-stdin", env=embedded_env, stdin=password + "\n"
        )
        return done.returncode, done.stdout, done.stderr

    added = alchemist(
        "users",
        "add",
        "ann@example.com",
        "--admin",
        "--password-stdin",
        env=embedded_env,
        stdin="old secret 1\n",
    )
    assert added.returncode == 0, added.stderr
    assert passwd("Ann@Example.com", "new secret 2") == (0, "password set for ann@example.com\n", "")
    assert passwd("ann@example.com", "short") == (
        1,
        "",
        "alchemist users passwd: password must be at least 8 characters\n",
    )
    assert passwd("nobody@example.com", "long enough 1") == (
        1,
        "",
        "alchemist users passwd: no user nobody@example.com\n",
    )

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["auth", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, embedded_env, f"{base}/healthz", tmp_path / "auth.log"):
        assert httpx.post(f"{base}/login", auth=("ann@example.com", "old secret 1")).status_code == 401
        assert httpx.post(f"{base}/login", auth=("ann@example.com", "new secret 2")).status_code == 200


def test_auth_refuses_to_start_without_a_good_secret(embedded_env: dict[str, str]) -> None:
    short = alchemist("auth", "--port", "0", env={**embedded_env, "JWT_SECRET": "tooshort"})
    assert short.returncode == 2
    assert "JWT_SECRET is 8 characters; it must be at least 32" in short.stderr
    missing = alchemist("auth", "--port", "0", env={**embedded_env, "MYSQL_HOST": "127.0.0.1"})
    assert missing.returncode == 2
    assert "JWT_SECRET is not set" in missing.stderr


def test_seed_style_mysql_setup_migrate_add_user_and_log_in(
    embedded_env: dict[str, str], mariadb_database: URL, tmp_path: Path
) -> None:
    env = {
        **embedded_env,
        "MYSQL_HOST": str(mariadb_database.host),
        "MYSQL_PORT": str(mariadb_database.port),
        "MYSQL_USER": str(mariadb_database.username),
        "MYSQL_DB": str(mariadb_database.database),
        "JWT_SECRET": "e2e-secret-" + "y" * 40,
    }
    migrated = alchemist("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "at revision" in migrated.stdout
    added = alchemist(
        "users",
        "add",
        "ann@example.com",
        "--admin",
        "--password-stdin",
        env=env,
        stdin="mysql secret 1\n",
    )
    assert added.returncode == 0, added.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["auth", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, env, f"{base}/healthz", tmp_path / "auth.log"):
        token = httpx.post(f"{base}/login", auth=("ann@example.com", "mysql secret 1")).text
        claims = httpx.post(f"{base}/validate", headers={"Authorization": f"Bearer {token}"})
    assert claims.json()["admin"] is True
    assert not Path(embedded_env["ALCHEMIST_DATA_DIR"], "alchemist.db").exists()
