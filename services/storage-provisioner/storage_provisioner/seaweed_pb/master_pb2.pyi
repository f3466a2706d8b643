from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CollectionStatisticsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectionStatisticsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionStatistics]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionStatistics, _Mapping]]] = ...) -> None: ...

class CollectionStatistics(_message.Message):
    __slots__ = ("collection", "file_count", "delete_count", "deleted_byte_count", "size", "physical_size", "volume_count")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BYTE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    file_count: int
    delete_count: int
    deleted_byte_count: int
    size: int
    physical_size: int
    volume_count: int
    def __init__(self, collection: _Optional[str] = ..., file_count: _Optional[int] = ..., delete_count: _Optional[int] = ..., deleted_byte_count: _Optional[int] = ..., size: _Optional[int] = ..., physical_size: _Optional[int] = ..., volume_count: _Optional[int] = ...) -> None: ...

class DiskInfo(_message.Message):
    __slots__ = ("type", "volume_count", "max_volume_count", "free_volume_count", "active_volume_count", "remote_volume_count")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_VOLUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    FREE_VOLUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VOLUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    REMOTE_VOLUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    type: str
    volume_count: int
    max_volume_count: int
    free_volume_count: int
    active_volume_count: int
    remote_volume_count: int
    def __init__(self, type: _Optional[str] = ..., volume_count: _Optional[int] = ..., max_volume_count: _Optional[int] = ..., free_volume_count: _Optional[int] = ..., active_volume_count: _Optional[int] = ..., remote_volume_count: _Optional[int] = ...) -> None: ...

class TopologyInfo(_message.Message):
    __slots__ = ("id", "diskInfos")
    class DiskInfosEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: DiskInfo
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[DiskInfo, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DISKINFOS_FIELD_NUMBER: _ClassVar[int]
    id: str
    diskInfos: _containers.MessageMap[str, DiskInfo]
    def __init__(self, id: _Optional[str] = ..., diskInfos: _Optional[_Mapping[str, DiskInfo]] = ...) -> None: ...

class VolumeListRequest(_message.Message):
    __slots__ = ("collection", "volume_id", "default_collection_only")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_COLLECTION_ONLY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    volume_id: int
    default_collection_only: bool
    def __init__(self, collection: _Optional[str] = ..., volume_id: _Optional[int] = ..., default_collection_only: _Optional[bool] = ...) -> None: ...

class VolumeListResponse(_message.Message):
    __slots__ = ("topology_info", "volume_size_limit_mb")
    TOPOLOGY_INFO_FIELD_NUMBER: _ClassVar[int]
    VOLUME_SIZE_LIMIT_MB_FIELD_NUMBER: _ClassVar[int]
    topology_info: TopologyInfo
    volume_size_limit_mb: int
    def __init__(self, topology_info: _Optional[_Union[TopologyInfo, _Mapping]] = ..., volume_size_limit_mb: _Optional[int] = ...) -> None: ...
