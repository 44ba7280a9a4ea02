"""One canonical account key: NFKC, trimmed, lower-cased; accents and other letters stay apart."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alchemist.auth.users import canonical_email


@pytest.mark.parametrize(
    "spelling",
    [
        "victim@example.com",
        "VICTIM@EXAMPLE.COM",
        "  Victim@Example.Com\t",
        "\uff56\uff49\uff43\uff54\uff49\uff4d@example.com",  # full-width letters
        "\uff36\uff29\uff23\uff34\uff29\uff2d\uff20example.com",  # full-width capitals and at sign
        "\u00a0victim@example.com\u3000",  # no-break and ideographic spaces
    ],
)
def test_spellings_of_one_address_share_its_key(spelling: str) -> None:
    assert canonical_email(spelling) == "victim@example.com"


@pytest.mark.parametrize(
    "other",
    [
        "v\u00edctim@example.com",  # í
        "vi\u0301ctim@example.com",  # i + combining acute (the same letter as í, decomposed)
        "v\u0131ctim@example.com",  # dotless i
        "v\u0456ctim@example.com",  # Cyrillic i
        "victim@exampl\u00e9.com",
    ],
)
def test_other_letters_make_other_accounts(other: str) -> None:
    assert canonical_email(other) != "victim@example.com"


def test_a_composed_and_a_decomposed_accent_are_one_account() -> None:
    assert canonical_email("vi\u0301ctim@example.com") == canonical_email("V\u00cdCTIM@example.com")


@given(st.text(max_size=40))
def test_the_key_is_a_fixed_point(text: str) -> None:
    once = canonical_email(text)
    assert canonical_email(once) == once
