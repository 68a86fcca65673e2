"""The wire form of a WriteRecords request, built from records that are already serialized.

The gateway's shipper replays spooled records (common/spool.py) as the bytes they were spooled
as, without parsing them back into messages; the logger walks the same wire form when a batch
does not parse as a whole (logger/decoding.py). Both sides take the tag from here.
"""

from __future__ import annotations

# WriteRecordsRequest.records is field 1, length-delimited (wire type 2).
RECORDS_TAG = (1 << 3) | 2


def encode_batch(payloads: list[bytes]) -> bytes:
    """A serialized WriteRecordsRequest from already serialized records (no re-encoding)."""
    parts: list[bytes] = []
    for payload in payloads:
        parts.append(bytes([RECORDS_TAG]))
        length = len(payload)
        while length > 0x7F:
            parts.append(bytes([(length & 0x7F) | 0x80]))
            length >>= 7
        parts.append(bytes([length]))
        parts.append(payload)
    return b"".join(parts)
