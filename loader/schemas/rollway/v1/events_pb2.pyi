import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelPublished(_message.Message):
    __slots__ = ("model", "version", "version_uri", "manifest_sha256", "total_bytes", "file_count", "published_at", "publisher")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_URI_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    version_uri: str
    manifest_sha256: str
    total_bytes: int
    file_count: int
    published_at: _timestamp_pb2.Timestamp
    publisher: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., version_uri: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., file_count: _Optional[int] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publisher: _Optional[str] = ...) -> None: ...
