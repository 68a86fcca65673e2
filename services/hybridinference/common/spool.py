"""A local append-only, fsync'd, size-bounded spool of opaque records, with one reader.

The logger appends every accepted batch here before acknowledging it (its write-ahead log) and a
writer drains it into the database; the gateway's shipper appends here what it cannot deliver and
replays it later. So both sides share one file format and one recovery rule. The spool knows only
bytes; a reader that keeps objects for frames it has not consumed yet keys them by the frames'
positions (``append`` returns them, ``SpoolBatch.positions`` hands them back).

Layout: ``<dir>/NNNNNNNNNNNN.seg`` segment files of frames ``[u32 length][u32 crc32][payload]``,
a ``cursor`` file naming the first frame not yet consumed, and a ``LOCK`` file held with flock so
two processes never share a spool. A torn frame at the end of the last segment (a crash during a
write) is cut off at open; frames up to the last fsync are never lost.

A write that fails part-way (disk full, I/O error, a short write) is cut back off the segment, so
no torn frame is ever left in the middle of a spool, and the caller gets SpoolWriteError. A torn or
damaged frame found anyway (at open or while reading, in any segment) is skipped past with the
rest of its segment and counted, never read again and again.

Consumption is at-least-once: the cursor is written without fsync, so after a crash the reader may
see a few already-consumed frames again. Every consumer here is idempotent by request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SUFFIX = ".seg"
# Bytes read from a segment per read call; a batch never needs more than this at once.
_READ_CHUNK = 4 * 1024 * 1024
# A frame must fit in one read chunk.
MAX_PAYLOAD_BYTES = _READ_CHUNK - _HEADER.size


class SpoolError(Exception):
    """The spool cannot be opened (unwritable, or in use by another process)."""


class SpoolFull(Exception):
    """Appending would exceed the spool's size bound; nothing was written."""


class SpoolWriteError(Exception):
    """The frames could not be written or synced (disk full, I/O error); none of them is kept."""


class FrameTooLarge(ValueError):
    """A payload is larger than one frame may be (MAX_PAYLOAD_BYTES); nothing was written."""


class Position(NamedTuple):
    """Where a frame starts (or, as a batch's end, where the next one would)."""

    segment: int
    offset: int


# (segment, offset) of one frame, as append returns it and SpoolBatch.positions holds it.
FramePosition = tuple[int, int]


@dataclass(frozen=True)
class SpoolBatch:
    payloads: list[bytes]
    # Where the next unread frame starts once this batch is committed.
    end: Position
    # Where each payload's frame starts (the key Spool.append returned for it).
    positions: list[FramePosition] = field(default_factory=list)


def _segment_name(number: int) -> str:
    return f"{number:012d}{_SUFFIX}"


def _scan(
    data: bytes, limit: int | None = None, starts: list[int] | None = None
) -> tuple[list[bytes], int, bool]:
    """Frames from the start of ``data``: (payloads, bytes consumed, stopped at a bad frame);
    with ``starts``, each frame's offset in ``data`` is appended to it."""
    payloads: list[bytes] = []
    offset = 0
    size = len(data)
    while (limit is None or len(payloads) < limit) and offset + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        end = start + length
        if end > size:
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return payloads, offset, True
        payloads.append(payload)
        if starts is not None:
            starts.append(offset)
        offset = end
    return payloads, offset, False


class Spool:
    """Single-writer, single-reader spool; all methods run on one event loop."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        """Use :meth:`open`."""
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._lock_fd = -1
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._cursor = Position(0, 0)
        self._write_fd = -1
        # Everything up to here is on disk (fsync'd); the reader never goes past it.
        self._durable = Position(0, 0)
        self._sync_task: asyncio.Task[None] | None = None
        self._rotate_lock = asyncio.Lock()
        self._has_data = asyncio.Event()
        # Frames appended and not yet consumed (recounted at open).
        self.pending_records = 0
        # Frames skipped because their checksum did not match (disk corruption).
        self.corrupt_frames = 0

    @classmethod
    def open(
        cls,
        directory: str | Path,
        max_bytes: int,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: bool = True,
    ) -> Spool:
        """Creates or recovers the spool in ``directory``; raises SpoolError when it cannot."""
        spool = cls(Path(directory), max_bytes, segment_bytes, fsync)
        try:
            spool._open()
        except OSError as error:
            spool.close()
            raise SpoolError(f"cannot open spool {directory}: {error}") from error
        except SpoolError:
            spool.close()
            raise
        return spool

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolError(
                f"spool {self.directory} is in use by another process; give each process "
                "its own spool directory"
            ) from None
        self._segments = sorted(
            int(p.name.removesuffix(_SUFFIX))
            for p in self.directory.iterdir()
            if p.name.endswith(_SUFFIX) and p.name.removesuffix(_SUFFIX).isdigit()
        )
        self._cursor = self._read_cursor()
        # Segments wholly before the cursor were consumed; a crash kept them around.
        for number in [n for n in self._segments if n < self._cursor.segment]:
            self._remove_segment(number)
        if not self._segments:
            self._segments = [max(self._cursor.segment, 1)]
            self._cursor = Position(self._segments[0], 0)
        elif self._cursor.segment not in self._segments:
            self._cursor = Position(self._segments[0], 0)
        self._recover()
        last = self._segments[-1]
        self._write_fd = os.open(self._path(last), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sizes[last] = os.fstat(self._write_fd).st_size
        self._durable = Position(last, self._sizes[last])
        if self.pending_records:
            self._has_data.set()
            log.info(
                "spool recovered",
                extra={"spool": str(self.directory), "records": self.pending_records},
            )

    def _recover(self) -> None:
        """Counts pending frames; cuts a torn tail off the last segment."""
        pending = 0
        for number in self._segments:
            path = self._path(number)
            data = path.read_bytes() if path.exists() else b""
            start = self._cursor.offset if number == self._cursor.segment else 0
            if start > len(data):
                start = len(data)
                self._cursor = Position(number, start)
            payloads, used, corrupt = _scan(data[start:])
            pending += len(payloads)
            end = start + used
            if end < len(data):
                if number == self._segments[-1] and not corrupt:
                    log.warning(
                        "spool: cut a torn frame off the end",
                        extra={"segment": str(path), "bytes": len(data) - end},
                    )
                    with path.open("r+b") as handle:
                        handle.truncate(end)
                        os.fsync(handle.fileno())
                    data = data[:end]
                else:
                    # Damage inside the file: what follows cannot be framed, so it is skipped.
                    self.corrupt_frames += 1
                    log.error(
                        "spool: corrupt frame, rest of the segment skipped",
                        extra={"segment": str(path), "offset": end},
                    )
                    if number == self._segments[-1]:
                        with path.open("r+b") as handle:
                            handle.truncate(end)
                            os.fsync(handle.fileno())
                        data = data[:end]
            self._sizes[number] = len(data) if end >= len(data) else end
        self.pending_records = pending

    # -- writing -------------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes on disk not yet consumed."""
        total = sum(self._sizes.get(n, 0) for n in self._segments)
        return total - self._cursor.offset

    async def append(self, payloads: Sequence[bytes]) -> list[FramePosition]:
        """Appends the payloads; returns, once they are on disk, where each frame starts.

        Raises SpoolFull."""
        if not payloads:
            return []
        if any(len(p) > MAX_PAYLOAD_BYTES for p in payloads):
            raise FrameTooLarge(f"a spool payload is limited to {MAX_PAYLOAD_BYTES} bytes")
        frames = b"".join(_HEADER.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        if self.pending_bytes + len(frames) > self.max_bytes:
            raise SpoolFull(
                f"spool {self.directory} holds {self.pending_bytes} bytes; limit {self.max_bytes}"
            )
        if self._sizes[self._segments[-1]] >= self.segment_bytes:
            async with self._rotate_lock:
                if self._sizes[self._segments[-1]] >= self.segment_bytes:
                    await self._rotate()
        last = self._segments[-1]
        # Whole frames, with no await in between: nothing on this loop can see half of them.
        self._write_all(last, frames)
        starts = accumulate(
            (_HEADER.size + len(p) for p in payloads[:-1]), initial=self._sizes[last]
        )
        # Plain tuples: equal to (and much cheaper to make than) Position.
        positions: list[FramePosition] = [(last, start) for start in starts]
        self._sizes[last] += len(frames)
        self.pending_records += len(payloads)
        target = Position(last, self._sizes[last])
        try:
            await self._sync_through(target)
        except OSError as error:
            # Whether the frames reached the disk is unknown: the caller keeps them (a replay is
            # harmless, every consumer being idempotent), and they stay readable if a later
            # sync succeeds.
            raise SpoolWriteError(f"spool {self.directory}: cannot sync: {error}") from error
        self._has_data.set()
        return positions

    def _write_all(self, last: int, frames: bytes) -> None:
        """Writes every byte or none: a short write is continued, a failed one rolled back."""
        view = memoryview(frames)
        written = 0
        try:
            while written < len(frames):
                count = self._os_write(self._write_fd, view[written:])
                if count <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                written += count
        except OSError as error:
            if written:
                # Cut the partial frames off, so the segment ends on a frame boundary.
                try:
                    os.ftruncate(self._write_fd, self._sizes[last])
                except OSError:
                    log.exception("spool: cannot cut a partial write off; it is skipped at read")
            raise SpoolWriteError(f"spool {self.directory}: cannot write: {error}") from error

    # The write call, replaceable in tests (a short write, ENOSPC part-way).
    _os_write = staticmethod(os.write)

    async def _sync_through(self, target: Position) -> None:
        # Group commit: one fsync in a thread covers every append made before it started.
        while self._durable < target:
            if self._sync_task is None:
                self._sync_task = asyncio.create_task(self._sync())
            await asyncio.shield(self._sync_task)

    async def _sync(self) -> None:
        last = self._segments[-1]
        upto = Position(last, self._sizes[last])
        try:
            if self._fsync:
                # In a thread: an fsync can take milliseconds and the loop serves requests.
                await asyncio.to_thread(os.fdatasync, self._write_fd)
            self._durable = max(self._durable, upto)
        finally:
            self._sync_task = None

    async def _rotate(self) -> None:
        while self._sync_task is not None:
            await asyncio.shield(self._sync_task)
        # No await from here on: no sync task may start on the descriptor being closed. One
        # blocking fdatasync per segment (every segment_bytes) is an acceptable pause.
        last = self._segments[-1]
        if self._fsync:
            os.fdatasync(self._write_fd)
        os.close(self._write_fd)
        self._durable = max(self._durable, Position(last, self._sizes[last]))
        number = last + 1
        self._write_fd = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segments.append(number)
        self._sizes[number] = 0
        if self._fsync:
            self._sync_directory()

    # -- reading -------------------------------------------------------------------------------

    async def wait_for_data(self) -> None:
        """Returns once unconsumed frames may exist (immediately if they do)."""
        await self._has_data.wait()

    def read(self, max_records: int, start: Position | None = None) -> SpoolBatch:
        """Up to ``max_records`` durable frames from the cursor, or from ``start`` (the end of a
        batch read but not committed yet, to read ahead of it); consumes nothing."""
        payloads: list[bytes] = []
        positions: list[FramePosition] = []
        from_cursor = start is None or start <= self._cursor
        position = self._cursor if from_cursor or start is None else start
        while len(payloads) < max_records:
            limit = self._readable_end(position.segment)
            if position.offset < limit:
                with self._path(position.segment).open("rb") as handle:
                    handle.seek(position.offset)
                    data = handle.read(min(limit - position.offset, _READ_CHUNK))
                starts: list[int] = []
                found, used, corrupt = _scan(data, max_records - len(payloads), starts)
                payloads.extend(found)
                # Plain tuples: equal to (and much cheaper to make than) Position.
                segment, base = position
                positions.extend([(segment, base + start) for start in starts])
                position = Position(position.segment, position.offset + used)
                # No frame could be read where one must start (whole frames up to ``limit``,
                # each fitting in one read): a torn or damaged frame. Skipping it, with the rest
                # of its segment, is the only way on; reading it again would loop forever.
                torn = not found and used == 0
                if corrupt or torn:
                    self.corrupt_frames += 1
                    log.error(
                        "spool: corrupt frame skipped with the rest of its segment",
                        extra={
                            "segment": position.segment,
                            "offset": position.offset,
                            "bytes": limit - position.offset,
                        },
                    )
                    position = Position(position.segment, limit)
                    if from_cursor and not payloads:
                        # Nothing unconsumed before it (no read-ahead either): move the cursor
                        # past it now, so the skipped bytes do not stay pending forever.
                        self._cursor = position
                        self._write_cursor()
                continue
            later = [n for n in self._segments if n > position.segment]
            if not later or position.segment >= self._durable.segment:
                break
            position = Position(later[0], 0)
        if not payloads and position == self._cursor:
            # Caught up: the next wait_for_data() blocks until an append.
            self._has_data.clear()
        return SpoolBatch(payloads, position, positions)

    def _readable_end(self, segment: int) -> int:
        size = self._sizes.get(segment, 0)
        if segment == self._durable.segment:
            return min(size, self._durable.offset)
        return size if segment < self._durable.segment else 0

    def commit(self, batch: SpoolBatch) -> None:
        """Marks the batch consumed; segments wholly behind the cursor are deleted."""
        if batch.end <= self._cursor:
            return
        self._cursor = batch.end
        self.pending_records = max(0, self.pending_records - len(batch.payloads))
        for number in [n for n in self._segments[:-1] if n < self._cursor.segment]:
            self._remove_segment(number)
        self._write_cursor()

    # -- files ---------------------------------------------------------------------------------

    def _path(self, number: int) -> Path:
        return self.directory / _segment_name(number)

    def _remove_segment(self, number: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(number).unlink()
        if number in self._segments:
            self._segments.remove(number)
        self._sizes.pop(number, None)

    def _read_cursor(self) -> Position:
        try:
            text = (self.directory / "cursor").read_text().split()
            return Position(int(text[0]), int(text[1]))
        except (FileNotFoundError, ValueError, IndexError):
            return Position(self._segments[0] if self._segments else 1, 0)

    def _write_cursor(self) -> None:
        # No fsync: a lost cursor only replays consumed frames, and replays are idempotent.
        temporary = self.directory / "cursor.tmp"
        temporary.write_text(f"{self._cursor.segment} {self._cursor.offset}\n")
        os.replace(temporary, self.directory / "cursor")

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self, remove_if_empty: bool = False) -> None:
        """Closes the files and releases the lock; unconsumed frames stay for the next open.

        ``remove_if_empty`` deletes the directory when nothing is pending, for spools whose
        path is per-process (a gateway's, named after its port).
        """
        empty = self._write_fd >= 0 and self.pending_records == 0
        if self._write_fd >= 0:
            if self._fsync:
                with contextlib.suppress(OSError):
                    os.fdatasync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = -1
        if remove_if_empty and empty:
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    path.unlink()
            with contextlib.suppress(OSError):
                self.directory.rmdir()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
