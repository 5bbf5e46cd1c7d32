"""functions/serving/logs.py: one configuration for every command, and no
credential printed at any level (third-party loggers held at INFO, and a
redacting filter on the handler)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from functions.serving import logs

TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+abc="
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    for name in logs.QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("ROLLWAY_KAFKA_SASL_PASSWORD", "hunter2-but-longer")
    monkeypatch.setenv("ROLLWAY_SOME_TOKEN", "short")  # under 8 characters: left alone


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_debug_keeps_third_party_loggers_at_info(
    credentials: None, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    logs.configure(log_format, "debug")
    logging.getLogger("botocore.auth").debug("CanonicalRequest:\nx-amz-security-token:%s", TOKEN)
    logging.getLogger("urllib3.connectionpool").debug("GET /?delegation=abc")
    logging.getLogger("s3transfer.tasks").debug("headers")
    logging.getLogger("rollway.test").debug("rollway's own debug line")
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    err = capsys.readouterr().err
    assert "rollway's own debug line" in err and "Found credentials" in err
    assert "CanonicalRequest" not in err and "delegation" not in err and "headers" not in err


def test_warning_level_is_not_lowered_for_them(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("text", "warning")
    logging.getLogger("botocore.endpoint").info("an info line")
    logging.getLogger("botocore.endpoint").warning("a warning line")
    err = capsys.readouterr().err
    assert "a warning line" in err and "an info line" not in err


def test_the_handler_masks_what_slips_through(
    credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("text", "debug")
    log = logging.getLogger("rollway.test")
    log.info("token %s and secret %s", TOKEN, SECRET)
    log.info("url-encoded %s", TOKEN.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D"))
    log.info("{'Authorization': b'AWS4-HMAC-SHA256 Credential=AKID/x, Signature=ab12'}")
    log.info("Authorization: Bearer abc.def.ghi")
    log.info("x-amz-security-token:anything-at-all and X-Amz-Signature=0123abcd&next=1")
    log.info("s3://user:pass@host/bucket and hunter2-but-longer; short stays")
    try:
        raise ValueError(f"boom {SECRET}")
    except ValueError:
        log.exception("failed")
    err = capsys.readouterr().err
    for leaked in (TOKEN, SECRET, "AKID/x", "Signature=ab12", "abc.def.ghi", "anything-at-all",
                   "0123abcd", "user:pass", "hunter2", "%2F"):  # fmt: skip
        assert leaked not in err, leaked
    assert "short stays" in err and "next=1" in err and "ValueError: boom <redacted>" in err


def test_json_fields_and_exceptions_are_masked(
    credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("json", "info")
    log = logging.getLogger("rollway.test")
    log.info("outcome", extra={"fields": {"reason": f"bad {TOKEN}", "version": 3}})
    try:
        raise RuntimeError(SECRET)
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["reason"] == "bad <redacted>" and lines[0]["version"] == 3
    assert SECRET not in lines[1]["exception"] and "<redacted>" in lines[1]["exception"]
