"""loader.display: the one sanitizer for what may be shown of a URI, a name or an error."""

from __future__ import annotations

import pytest

from loader import display
from loader.errors import NotFound


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://key:secret@bucket/models/m?X-Amz-Signature=abc#f", "s3://bucket/models/m"),
        ("https://user:pw@minio:9000/b/k", "https://minio:9000/b/k"),
        ("/local/models/m", "/local/models/m"),
        ("C:\\models\\m", "C:\\models\\m"),  # a one-letter scheme is a drive, not a URI
        ("http://host:99999999/x", "<malformed URI>"),
    ],
)
def test_uri_keeps_scheme_host_and_path_only(uri: str, shown: str) -> None:
    assert display.uri(uri) == shown


def test_text_masks_the_user_info_of_every_url_in_it() -> None:
    message = "GET http://a:b@h1/x failed, then s3://k:s@h2/y"
    assert display.text(message) == "GET http://<redacted>@h1/x failed, then s3://<redacted>@h2/y"


def test_quoted_escapes_and_cuts() -> None:
    assert display.quoted("a\nb") == "'a\\nb'"
    assert display.quoted("x" * 10, 4) == "'xxxx'..."


def test_name_is_bare_when_short_and_printable() -> None:
    assert display.name("ce-1234") == "ce-1234"
    assert display.name("evil\x1b[2J") == repr("evil\x1b[2J")
    assert display.name("y" * 2000) == repr("y" * 120) + "..."


def test_error_keeps_rollway_messages_and_scrubs_the_rest() -> None:
    assert display.error(NotFound("model m version 3 is not staged"), 20) == "model m version 3 is"
    foreign = OSError("cannot reach http://u:p@store/x")
    assert display.error(foreign) == "OSError: cannot reach http://<redacted>@store/x"
