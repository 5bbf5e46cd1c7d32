"""S3 specifics: configuration from the environment, and failures against the real
SeaweedFS mapped into the error tree without leaking a credential."""

from __future__ import annotations

import dataclasses
import socket

import pytest
from botocore.exceptions import ClientError

from functions.devstack.seaweedfs import TEST_BUCKET, SeaweedFS
from loader.errors import (
    ConfigError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RollwayError,
    Unauthenticated,
    Unavailable,
)
from loader.storage import open_storage
from loader.storage.s3 import S3Settings, S3Storage, map_error

SECRET = "wJalrXUtnFEMI-not-the-real-secret"


def settings_for(server: SeaweedFS, **changes: object) -> S3Settings:
    return dataclasses.replace(S3Settings.from_env(server.env()), **changes)  # type: ignore[arg-type]


def assert_no_secret(err: RollwayError, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in str(err) and secret not in repr(err) and secret not in err.message


# --- configuration: pure, table-driven ----------------------------------------------


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, None),
        ({"S3_ENDPOINT": "minio:9000"}, "https://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, "http://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "1"}, "https://minio:9000"),
        ({"S3_ENDPOINT": "http://minio:9000", "S3_USE_HTTPS": "1"}, "http://minio:9000"),
        ({"AWS_ENDPOINT_URL": "http://a:1", "S3_ENDPOINT": "b:2"}, "http://a:1"),
        ({"AWS_ENDPOINT_URL_S3": "http://s3:3", "AWS_ENDPOINT_URL": "http://a:1"}, "http://s3:3"),
    ],
)
def test_endpoint_comes_from_aws_then_kserve_variables(
    env: dict[str, str], endpoint: str | None
) -> None:
    assert S3Settings.from_env(env).endpoint_url == endpoint


@pytest.mark.parametrize(
    ("env", "verify"),
    [
        ({}, True),
        ({"S3_VERIFY_SSL": "1"}, True),
        ({"S3_VERIFY_SSL": "0"}, False),
        ({"AWS_CA_BUNDLE": "/etc/ca.pem"}, "/etc/ca.pem"),
        ({"AWS_CA_BUNDLE": "/etc/ca.pem", "S3_VERIFY_SSL": "0"}, False),
    ],
)
def test_tls_verification_settings(env: dict[str, str], verify: bool | str) -> None:
    assert S3Settings.from_env(env).verify == verify


@pytest.mark.parametrize(
    ("env", "region"),
    [
        ({}, None),  # AWS: boto3's own chain decides
        ({"AWS_ENDPOINT_URL": "http://minio:9000"}, "us-east-1"),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, "eu-west-1"),
        ({"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"}, "eu-central-1"),
    ],
)
def test_region(env: dict[str, str], region: str | None) -> None:
    assert S3Settings.from_env(env).region == region


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"S3_USE_HTTPS": "maybe", "S3_ENDPOINT": "minio:9000"}, "S3_USE_HTTPS"),
        ({"S3_VERIFY_SSL": "yes please"}, "S3_VERIFY_SSL"),
        ({"AWS_ENDPOINT_URL": "ftp://minio"}, "S3 endpoint 'ftp://minio'"),
    ],
)
def test_bad_settings_fail_fast_naming_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        S3Settings.from_env(env)


def test_credentials_are_read_and_repr_hides_the_secrets() -> None:
    settings = S3Settings.from_env(
        {
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_SESSION_TOKEN": "session-token-value",
        }
    )
    assert settings.access_key_id == "AKIAEXAMPLE"
    assert settings.secret_access_key == SECRET
    assert settings.session_token == "session-token-value"
    for text in (repr(settings), str(settings), f"{settings}"):
        assert SECRET not in text and "session-token-value" not in text
        assert "AKIAEXAMPLE" in text


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NotFound),
        ("NoSuchBucket", 404, NotFound),
        ("InvalidAccessKeyId", 403, Unauthenticated),
        ("SignatureDoesNotMatch", 403, Unauthenticated),
        ("ExpiredToken", 400, Unauthenticated),
        ("AccessDenied", 403, PermissionDenied),
        ("SlowDown", 503, Unavailable),
        ("InternalError", 500, Unavailable),
        ("502", 502, Unavailable),
        ("MalformedXML", 400, Internal),
    ],
)
def test_client_errors_map_into_the_error_tree(
    code: str, status: int, expected: type[RollwayError]
) -> None:
    response = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    err = map_error(ClientError(response, "GetObject"), "s3://bkt/k", "http://h:1")
    assert type(err) is expected
    assert "s3://bkt/k" in err.message


# --- failures against the real server -------------------------------------------------


def test_wrong_secret_is_unauthenticated_without_leaking_it(seaweedfs: SeaweedFS) -> None:
    uri = f"s3://{TEST_BUCKET}/auth"
    store = S3Storage(uri, settings_for(seaweedfs, secret_access_key=SECRET))
    for call in (
        lambda: list(store.list()),
        lambda: store.stat("k"),  # HEAD: no error body, so the backend asks again
        lambda: store.open_read("k"),
        lambda: store.write_bytes("k", b"x"),
        lambda: store.create_if_absent("k", b"x"),
    ):
        with pytest.raises(Unauthenticated) as caught:
            call()
        assert caught.value.message.startswith(f"S3 rejected the credentials for {uri}")
        assert "SignatureDoesNotMatch" in caught.value.message
        assert_no_secret(caught.value, SECRET, seaweedfs.secret_key)


def test_unknown_access_key_is_unauthenticated(seaweedfs: SeaweedFS) -> None:
    store = S3Storage(
        f"s3://{TEST_BUCKET}/auth", settings_for(seaweedfs, access_key_id="AKIDUNKNOWN")
    )
    with pytest.raises(Unauthenticated, match="InvalidAccessKeyId") as caught:
        store.stat("k")
    assert_no_secret(caught.value, seaweedfs.secret_key)


def test_missing_bucket_is_not_found_naming_it(s3_env: dict[str, str]) -> None:
    store = open_storage("s3://no-such-bucket-rollway/models")
    with pytest.raises(NotFound, match="'no-such-bucket-rollway' does not exist"):
        list(store.list())
    with pytest.raises(NotFound, match="no-such-bucket-rollway"):
        store.open_read("m/1/saved_model.pb")
    with pytest.raises(NotFound):
        store.stat("m/1/saved_model.pb")


def test_unreachable_endpoint_is_unavailable(seaweedfs: SeaweedFS) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = S3Storage("s3://bkt/p", settings_for(seaweedfs, endpoint_url=endpoint, max_attempts=1))
    for call in (lambda: store.stat("k"), lambda: list(store.list())):
        with pytest.raises(Unavailable, match=f"cannot reach S3 at {endpoint}") as caught:
            call()
        assert caught.value.retriable
        assert_no_secret(caught.value, seaweedfs.secret_key)


def test_uri_with_credentials_is_refused_without_echoing_them(s3_env: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        open_storage(f"s3://AKID:{SECRET}@bucket/models")
    assert_no_secret(caught.value, SECRET)


def test_root_prefix_is_respected(s3_root: str, seaweedfs: SeaweedFS) -> None:
    store = open_storage(s3_root)
    store.write_bytes("m/1/file", b"abc")
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    client = seaweedfs.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert [item["Key"] for item in listed] == [f"{prefix}/m/1/file"]
    assert store.join("m/1/file") == f"{s3_root}/m/1/file"
    store.delete("m/1/file")
