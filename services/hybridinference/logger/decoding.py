"""Decodes a WriteRecords request so that one malformed record cannot fail the whole batch.

protobuf refuses a whole message when any string in it is not valid UTF-8, which would turn one
bad record from a non-Python client into a batch the client retries forever. When the fast path
fails, the batch is walked on the wire and each record is parsed alone; the ones that do not
parse are reported by position, like any other rejected record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from hybridinference.common.record_batch import RECORDS_TAG
from hybridinference.logger.v1 import logger_pb2

_MALFORMED = "record is not valid protobuf (e.g. a string that is not UTF-8)"


@dataclass
class DecodedBatch:
    # (position in the request, record) for every record that parsed.
    records: list[tuple[int, logger_pb2.RequestRecord]]
    # (position, reason) for every record that did not.
    malformed: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def of(cls, request: logger_pb2.WriteRecordsRequest) -> DecodedBatch:
        return cls(list(enumerate(request.records)))


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise DecodeError("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _skip(data: bytes, offset: int, wire_type: int) -> int:
    if wire_type == 0:
        return _varint(data, offset)[1]
    if wire_type == 1:
        return offset + 8
    if wire_type == 2:
        length, offset = _varint(data, offset)
        return offset + length
    if wire_type == 5:
        return offset + 4
    raise DecodeError(f"unsupported wire type {wire_type}")


def decode_batch(data: bytes) -> DecodedBatch:
    """Raises DecodeError only when the request itself (not one record) is not protobuf."""
    try:
        return DecodedBatch.of(logger_pb2.WriteRecordsRequest.FromString(data))
    except DecodeError:
        pass
    batch = DecodedBatch([])
    offset = 0
    index = 0
    while offset < len(data):
        tag, offset = _varint(data, offset)
        if tag != RECORDS_TAG:
            offset = _skip(data, offset, tag & 7)
            continue
        length, offset = _varint(data, offset)
        if offset + length > len(data):
            raise DecodeError("truncated record")
        try:
            batch.records.append(
                (index, logger_pb2.RequestRecord.FromString(data[offset : offset + length]))
            )
        except DecodeError:
            batch.malformed.append((index, _MALFORMED))
        offset += length
        index += 1
    if offset != len(data):
        raise DecodeError("truncated request")
    return batch
