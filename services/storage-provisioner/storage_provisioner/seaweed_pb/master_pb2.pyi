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
