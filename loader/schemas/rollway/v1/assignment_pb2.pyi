import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssignmentDocument(_message.Message):
    __slots__ = ("schema_version", "current", "history", "pinned_versions", "label_overrides", "removed_labels")
    class LabelOverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PINNED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LABEL_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_LABELS_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    current: AssignmentChanged
    history: _containers.RepeatedCompositeFieldContainer[AssignmentChanged]
    pinned_versions: _containers.RepeatedScalarFieldContainer[int]
    label_overrides: _containers.ScalarMap[str, int]
    removed_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema_version: _Optional[int] = ..., current: _Optional[_Union[AssignmentChanged, _Mapping]] = ..., history: _Optional[_Iterable[_Union[AssignmentChanged, _Mapping]]] = ..., pinned_versions: _Optional[_Iterable[int]] = ..., label_overrides: _Optional[_Mapping[str, int]] = ..., removed_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class AssignmentChanged(_message.Message):
    __slots__ = ("model", "generation", "versions", "labels", "cause", "changed_at")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    model: str
    generation: int
    versions: _containers.RepeatedCompositeFieldContainer[AssignedVersion]
    labels: _containers.ScalarMap[str, int]
    cause: str
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, model: _Optional[str] = ..., generation: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[AssignedVersion, _Mapping]]] = ..., labels: _Optional[_Mapping[str, int]] = ..., cause: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AssignedVersion(_message.Message):
    __slots__ = ("version", "version_uri", "manifest_sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_URI_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    version_uri: str
    manifest_sha256: str
    def __init__(self, version: _Optional[int] = ..., version_uri: _Optional[str] = ..., manifest_sha256: _Optional[str] = ...) -> None: ...
