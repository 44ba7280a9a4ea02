"""netguard's judgement of addresses and URLs, and the webhook settings (no network here)."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from alchemist import netguard
from alchemist.config import ConfigError, Settings

# Every spelling of this machine, of private networks and of special addresses a resolver or
# URL parser accepts: all refused with no allow-list.
FORBIDDEN_HOSTS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.000.000.001",
    "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]",
    "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "localhost", "localhost.", "LOCALHOST", "api.localhost",
    "ip6-localhost", "0.0.0.0", "0", "[::]",  # noqa: S104 "10.1.2.3", "172.16.0.1", "172.31.255.255",
    "192.168.0.1", "100.64.0.1", "169.254.169.254", "169.254.1.1", "[fe80::1]", "[fc00::1]",
    "[fd00:ec2::254]", "100.100.100.200", "224.0.0.251", "239.255.255.250", "[ff02::1]",
    "255.255.255.255", "240.0.0.1", "192.0.2.10", "198.18.0.1", "[2001:db8::1]", "[2001::1]",
]  # fmt: skip
PUBLIC_HOSTS = ["8.8.8.8", "[2606:4700:4700::1111]", "[::ffff:8.8.8.8]", "example.com", "hooks.example.org."]


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
def test_forbidden_literal_hosts_are_refused(host: str) -> None:
    with pytest.raises(netguard.ForbiddenAddress, match=r"public addresses only|not a valid URL"):
        netguard.check_url(f"http://{host}:8080/hook")


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_public_hosts_pass_the_early_check(host: str) -> None:
    target = netguard.check_url(f"https://{host}/hook")
    assert (target.port, target.url.scheme) == (443, "https")


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com", "//x"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(netguard.ForbiddenAddress):
        netguard.check_url(url)


@pytest.mark.parametrize(
    ("host", "address"),
    [("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
     ("0177.0.0.1", "127.0.0.1"), ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"),
     ("[::ffff:127.0.0.1]", "::ffff:7f00:1"), ("1.2.3.4.", "1.2.3.4"), ("0", "0.0.0.0"), ("0x", "0.0.0.0")],  # noqa: S104
)  # fmt: skip
def test_literal_addresses_are_read_the_way_resolvers_read_them(host: str, address: str) -> None:
    assert netguard.literal_address(host) == ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "09.1.1.1", "1..2"])
def test_names_are_not_addresses(host: str) -> None:
    assert netguard.literal_address(host) is None


def test_the_allow_list_admits_an_intranet_but_never_the_metadata_endpoint() -> None:
    allowed = netguard.parse_networks("10.20.0.0/16, 127.0.0.0/8 169.254.0.0/16")
    assert netguard.check_url("http://10.20.3.4/hook", allowed).host == "10.20.3.4"
    assert netguard.check_url("http://localhost:9000/hook", allowed).port == 9000
    assert netguard.refusal(ip_address("::ffff:127.0.0.1"), allowed) is None
    for still_refused in ("10.21.0.1", "169.254.169.254", "[fd00:ec2::254]", "[::1]"):
        with pytest.raises(netguard.ForbiddenAddress):
            netguard.check_url(f"http://{still_refused}/", allowed)
    assert netguard.refusal(IPv4Address("8.8.8.8"), allowed) is None


def test_allow_list_syntax_errors_name_the_entry() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8'"):
        netguard.parse_networks("10.0.0.1/8")  # host bits set: a typo, not a wider network
    with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_NETWORKS"):
        Settings(WEBHOOK_ALLOWED_NETWORKS="intranet")


def test_webhook_secret_forms(tmp_path: Path) -> None:
    make = lambda secret: Settings(ALCHEMIST_DATA_DIR=tmp_path, WEBHOOK_SECRET=secret)  # noqa: E731
    assert Settings(ALCHEMIST_DATA_DIR=tmp_path).webhook_key() is None  # unset: no webhooks
    assert make("whsec_" + "A" * 32).webhook_key() == b"\0" * 24  # base64, per the spec
    assert make("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").webhook_key() is not None  # unpadded
    raw = "a raw secret of more than thirty-two characters"
    assert make(raw).webhook_key() == raw.encode()
    for bad, words in (
        ("whsec_!!!", "not base64"),
        ("whsec_AAAA", "decodes to 3 bytes"),
        ("short", "at least"),
    ):
        with pytest.raises(ConfigError, match=words):
            make(bad).webhook_key()
    same = "the-very-same-secret-for-both-of-them-0123"
    with pytest.raises(ConfigError, match="must differ from JWT_SECRET"):
        Settings(ALCHEMIST_DATA_DIR=tmp_path, WEBHOOK_SECRET=same, JWT_SECRET=same).webhook_key()  # type: ignore[arg-type]
