import base64
import json
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from alchemist.tokens import TokenError, TokenSigner

SECRET = "s" * 48
signer = TokenSigner(secret=SECRET, issuer="audio-alchemist")


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_issued_token_carries_the_seed_claims_and_more() -> None:
    claims = signer.verify(signer.issue(user_id=7, username="ann@example.com", admin=True))
    assert claims["username"] == "ann@example.com"
    assert claims["admin"] is True
    assert claims["sub"] == "7"
    assert claims["iss"] == "audio-alchemist"
    assert len(claims["jti"]) == 32
    assert claims["exp"] - claims["iat"] == 86_400


def test_each_token_has_its_own_id() -> None:
    first = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    second = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    assert first["jti"] != second["jti"]


def test_expired_token_is_rejected() -> None:
    short = TokenSigner(secret=SECRET, issuer="audio-alchemist", ttl=timedelta(seconds=-1))
    with pytest.raises(TokenError, match="expired"):
        signer.verify(short.issue(user_id=1, username="a@b.c", admin=False))


def test_token_signed_with_another_key_is_rejected() -> None:
    other = TokenSigner(secret="o" * 48, issuer="audio-alchemist")
    with pytest.raises(TokenError, match="signature"):
        signer.verify(other.issue(user_id=1, username="a@b.c", admin=False))


def test_tampered_payload_is_rejected() -> None:
    header, _, signature = signer.issue(user_id=1, username="a@b.c", admin=False).split(".")
    forged = b64({"sub": "1", "username": "a@b.c", "admin": True, "iss": "audio-alchemist"})
    with pytest.raises(TokenError):
        signer.verify(f"{header}.{forged}.{signature}")


def test_alg_none_is_rejected() -> None:
    claims = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**claims, 'admin': True})}."
    with pytest.raises(TokenError, match="algorithm"):
        signer.verify(unsigned)


@pytest.mark.parametrize("algorithm", ["HS512", "RS256"])
def test_other_algorithms_are_rejected(algorithm: str) -> None:
    claims = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    key: object = SECRET * 2
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims, key, algorithm=algorithm)  # type: ignore[arg-type]
    with pytest.raises(TokenError, match="algorithm"):
        signer.verify(token)


def test_other_issuer_and_missing_claims_are_rejected() -> None:
    foreign = TokenSigner(secret=SECRET, issuer="someone-else")
    with pytest.raises(TokenError, match="issuer"):
        signer.verify(foreign.issue(user_id=1, username="a@b.c", admin=False))
    bare = jwt.encode({"username": "a@b.c", "admin": True}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="exp"):
        signer.verify(bare)


def test_non_boolean_admin_claim_is_rejected() -> None:
    claims = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    token = jwt.encode({**claims, "admin": "yes"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="admin"):
        signer.verify(token)


@pytest.mark.parametrize("garbage", ["", "a.b.c", "....", "é.é.é", "x" * 10_000])
def test_garbage_is_a_token_error(garbage: str) -> None:
    with pytest.raises(TokenError):
        signer.verify(garbage)


@pytest.mark.parametrize("version", [0, 1, 7, 2**31])
def test_the_token_version_travels_as_ver(version: int) -> None:
    claims = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False, version=version))
    assert claims["ver"] == version


def test_a_token_from_before_versions_has_no_ver_and_still_verifies() -> None:
    claims = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    del claims["ver"]
    assert "ver" not in signer.verify(jwt.encode(claims, SECRET, "HS256"))


@pytest.mark.parametrize("bad", [-1, "1", 1.5, True, None, [1]])
def test_a_ver_that_is_not_a_whole_number_is_refused(bad: object) -> None:
    claims = signer.verify(signer.issue(user_id=1, username="a@b.c", admin=False))
    with pytest.raises(TokenError, match="'ver'"):
        signer.verify(jwt.encode({**claims, "ver": bad}, SECRET, "HS256"))
