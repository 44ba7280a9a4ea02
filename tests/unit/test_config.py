import stat
from pathlib import Path

import pytest

from alchemist.config import ConfigError, Settings


def test_embedded_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(ALCHEMIST_DATA_DIR=tmp_path)
    assert settings.embedded
    assert settings.database_url.get_backend_name() == "sqlite"
    assert settings.database_url.database == str(tmp_path / "alchemist.db")


def test_seed_mysql_variables_make_a_mysql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MYSQL_HOST": "db.internal",
        "MYSQL_USER": "auth_user",
        "MYSQL_PASSWORD": "p@ss/word",
        "MYSQL_DB": "auth",
        "MYSQL_PORT": "3307",
    }.items():
        monkeypatch.setenv(name, value)
    url = Settings().database_url
    assert not Settings().embedded
    assert (url.drivername, url.host, url.port, url.database) == (
        "mysql+pymysql",
        "db.internal",
        3307,
        "auth",
    )
    assert url.password == "p@ss/word"


def test_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_HOST", "ignored")
    monkeypatch.setenv("DATABASE_URL", "mysql+pymysql://u@h/d")
    assert Settings().database_url.host == "h"


def test_embedded_default_generates_and_keeps_a_private_secret(tmp_path: Path) -> None:
    first = Settings(ALCHEMIST_DATA_DIR=tmp_path).jwt_secret()
    assert len(first) >= 32
    assert Settings(ALCHEMIST_DATA_DIR=tmp_path).jwt_secret() == first
    mode = (tmp_path / "jwt_secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        Settings(ALCHEMIST_DATA_DIR=tmp_path, JWT_SECRET="short").jwt_secret()  # type: ignore[arg-type]


def test_missing_secret_is_refused_outside_the_embedded_default(tmp_path: Path) -> None:
    settings = Settings(ALCHEMIST_DATA_DIR=tmp_path, MYSQL_HOST="db")
    with pytest.raises(ConfigError, match="JWT_SECRET is not set"):
        settings.jwt_secret()
    assert not (tmp_path / "jwt_secret").exists()
