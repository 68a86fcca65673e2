"""The limits of a request record: the one definition the gateway caps records to when it builds
them, the gateway's input validation holds requests to, and the logger validates against.

Both sides reading the same numbers is what makes "a request the gateway serves is never a record
the logger rejects" hold (tests/unit/test_record_caps.py checks it as a property). Limits are in
characters (Python ``len``); NUL is refused or removed everywhere because PostgreSQL cannot store
it in text or JSONB.
"""

from __future__ import annotations

MAX_REQUEST_ID_CHARS = 128
# Every short text field of a record: surface, key id, user, models, provider, endpoint, status.
MAX_TEXT_CHARS = 256
MAX_ERROR_CHARS = 16_384
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 2048
MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 1024
# Tools offered or called, features used (a model call offers at most 128 tools).
MAX_NAMES = 1024
# The whole record without captured content (prompt and response are capped on their own).
MAX_RECORD_BYTES = 64 * 1024

SHORT_TEXT_FIELDS = (
    "surface",
    "api_key_id",
    "user",
    "requested_model",
    "served_model",
    "provider",
    "endpoint",
    "status",
    "traceparent",
)

NUL = "\x00"
