import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
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

class VersionStaged(_message.Message):
    __slots__ = ("model", "version", "version_uri", "source_uri", "manifest_sha256", "total_bytes", "staged_at", "cause")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_URI_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGED_AT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    version_uri: str
    source_uri: str
    manifest_sha256: str
    total_bytes: int
    staged_at: _timestamp_pb2.Timestamp
    cause: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., version_uri: _Optional[str] = ..., source_uri: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., total_bytes: _Optional[int] = ..., staged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cause: _Optional[str] = ...) -> None: ...

class VersionRejected(_message.Message):
    __slots__ = ("model", "version", "version_uri", "reason", "verdict", "problems", "rejected_at", "cause", "source_record")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_URI_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RECORD_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    version_uri: str
    reason: str
    verdict: str
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    rejected_at: _timestamp_pb2.Timestamp
    cause: str
    source_record: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., version_uri: _Optional[str] = ..., reason: _Optional[str] = ..., verdict: _Optional[str] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., rejected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cause: _Optional[str] = ..., source_record: _Optional[str] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("kind", "path", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    path: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., path: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
