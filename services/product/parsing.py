"""Reading and validating import files in a process of their own.

Parsing and validating rows is pure Python; in the service's process it
would fight the event loop for the GIL and slow both the import's `COPY`
and every RPC. So a child process (spawned, not forked: the parent runs
gRPC) reads one file, validates its rows, and hands over chunks already
encoded as CSV for `COPY`, with their rejects, through a bounded queue.
"""

from __future__ import annotations

import asyncio
import csv
import io
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from services.product.domain import InvalidProduct, RowDecoder, product_from_row
from services.product.readers import FileFormatError, Reject, Row, SourceFile

_QUEUE_DEPTH = 3
_END = "end"
_ERROR = "error"


@dataclass
class Chunk:
    """One chunk of a file: its valid rows as COPY-ready CSV, and its rejects."""

    file_index: int
    index: int
    rows: int = 0
    bytes_read: int = 0
    valid: int = 0
    csv: bytes = b""
    rejects: list[Reject] = field(default_factory=list)


class FileEnd(NamedTuple):
    """Every chunk of file `file_index` has been produced."""

    file_index: int
    size: int


def chunks(source: SourceFile, skip: set[int], size: int, file_index: int = 0) -> Iterator[Chunk]:
    """Chunks of `size` input rows; chunks in `skip` are read past, not validated."""
    index, rows, valid = 0, 0, 0
    rejects: list[Reject] = []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def emit() -> Chunk:
        return Chunk(file_index, index, rows, source.bytes_read, valid, buffer.getvalue().encode("utf-8"), rejects)

    decoder: RowDecoder | None = None
    for item in source.rows():
        rows += 1
        if index not in skip:
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                if decoder is None and source.columns:
                    decoder = RowDecoder(source.columns)
                record = _record(item, decoder, rejects)
                if record is not None:
                    writer.writerow(record)
                    valid += 1
        if rows == size:
            yield emit()
            index, rows, valid, rejects = index + 1, 0, 0, []
            buffer.seek(0)
            buffer.truncate()
    if rows:
        yield emit()


def _record(row: Row, decoder: RowDecoder | None, rejects: list[Reject]) -> tuple[object, ...] | None:
    try:
        if isinstance(row.values, list):
            assert decoder is not None
            data = decoder.decode(row.values)
        else:
            data = product_from_row(row.values)
    except InvalidProduct as exc:
        rejects.append(Reject(row.line, exc.field, exc.reason, exc.message, row.raw[:300]))
        return None
    return (row.line, *data, data.eligible)


def _exit_with_parent() -> None:
    """The reader must not outlive a service killed mid-import (it would block on a full queue)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _produce(
    files: list[tuple[int, str, set[int]]], file_format: int, size: int, out: multiprocessing.Queue[object]
) -> None:
    _exit_with_parent()
    try:
        for file_index, path, skip in files:
            source = SourceFile(Path(path), file_format)
            for chunk in chunks(source, skip, size, file_index):
                out.put(chunk)
            out.put(FileEnd(file_index, source.size))
        out.put(_END)
    except FileFormatError as exc:
        out.put((_ERROR, str(exc)))


class ChunkReader:
    """Chunks of several files, produced in order by one child process and
    awaited one by one; each file's last chunk is followed by a `FileEnd`."""

    def __init__(self, files: list[tuple[int, Path, set[int]]], file_format: int, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._queue: multiprocessing.Queue[object] = context.Queue(maxsize=_QUEUE_DEPTH)
        listed = [(index, str(path), skip) for index, path, skip in files]
        self._process = context.Process(target=_produce, args=(listed, file_format, size, self._queue), daemon=True)
        self._process.start()

    def _get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive() and self._queue.empty():
                    return (_ERROR, f"the reader process died (exit code {self._process.exitcode})")

    async def next(self) -> Chunk | FileEnd | None:
        """The next chunk or file end, None at the end; FileFormatError for a bad file."""
        item = await asyncio.to_thread(self._get)
        if item == _END:
            return None
        if isinstance(item, (Chunk, FileEnd)):
            return item
        assert isinstance(item, tuple)
        raise FileFormatError(str(item[1]))

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        self._queue.close()
