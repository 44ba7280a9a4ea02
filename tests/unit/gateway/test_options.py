"""Upload options: described for the page from the model, parsed strictly from form fields."""

from __future__ import annotations

from typing import Literal

import pytest
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field

from alchemist.gateway.routes.uploads import option_fields, parse_options


class Sample(BaseModel):
    """Every kind of field a form can show."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["mp3", "opus"] = Field(default="mp3", title="Format")
    bitrate: int | None = Field(default=None, title="Bitrate (kbps)", ge=32, le=320)
    gain: float = Field(default=0.0, description="dB")
    mono: bool = False
    title: str | None = Field(default=None, description="Tag")


def test_each_field_is_described_in_order_with_its_kind_label_and_bounds() -> None:
    described = {field.name: field for field in option_fields(Sample)}
    assert list(described) == ["format", "bitrate", "gain", "mono", "title"]
    assert described["format"].type == "choice" and described["format"].choices == ["mp3", "opus"]
    assert described["format"].label == "Format" and described["format"].default == "mp3"
    bitrate = described["bitrate"]
    assert (bitrate.type, bitrate.minimum, bitrate.maximum) == ("integer", 32, 320)
    assert described["gain"].type == "number" and described["gain"].description == "dB"
    assert described["mono"].type == "boolean"
    assert described["title"].type == "string" and not described["title"].required


def test_the_real_options_include_the_webhook() -> None:
    from alchemist.gateway.schemas import UploadOptions

    (webhook,) = option_fields(UploadOptions)
    assert webhook.name == "webhook_url" and webhook.label == "Webhook URL"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"webhook_url": "ftp://x"}, "webhook_url: URL scheme should be 'http' or 'https'"),
        ({"webhook_url": "http://"}, "webhook_url:"),
        ({"nope": "1"}, "unknown field 'nope'"),
        ({"nope": "1", "other": "2"}, "unknown field 'other'"),
    ],
)
def test_bad_fields_are_a_400_naming_each(fields: dict[str, str], words: str) -> None:
    with pytest.raises(HTTPException) as caught:
        parse_options(fields)
    assert caught.value.status_code == 400 and words in caught.value.detail


def test_empty_fields_mean_not_given() -> None:
    assert parse_options({"webhook_url": ""}).webhook_url is None
    assert str(parse_options({"webhook_url": "https://hooks.example.com/x"}).webhook_url).startswith(
        "https://"
    )
