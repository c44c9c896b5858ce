"""Reading and validating import files in a process of their own.

Parsing and validating rows in the service's process would fight the event
loop for the GIL and slow both the import's `COPY` and every RPC. So a child
process (spawned, not forked: the parent runs gRPC) reads the files, checks
their rows and hands over chunks already encoded as CSV for `COPY`, with
their rejects, through a bounded queue. CSV, the format of the bulk
migration, is parsed and checked a chunk at a time by Arrow (`columnar`);
JSON lines and Parquet row by row.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from bmc.product.v1 import product_pb2
from services.product.columnar import decode_batch
from services.product.domain import InvalidProduct, RowDecoder, product_from_row
from services.product.locations import Buckets
from services.product.readers import (
    GZIP_ERRORS,
    FileFormatError,
    Reject,
    Row,
    SourceFile,
    SourceUnreadable,
    csv_records,
)

_QUEUE_DEPTH = 3
_READ_SIZE = 1 << 22
_QUOTE_REACH = 1 << 21
_END = "end"
_ERROR = "error"
_UNREADABLE = "unreadable"


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


def chunks(
    source: SourceFile, skip: set[int], size: int, file_index: int = 0, with_line: bool = True
) -> Iterator[Chunk]:
    """Chunks of about `size` input rows; chunks in `skip` are read past, not
    validated. `with_line` puts each row's line number first in the CSV."""
    read = csv_chunks if source.format == product_pb2.IMPORT_FORMAT_CSV else row_chunks
    try:
        yield from read(source, skip, size, file_index, with_line)
    except GZIP_ERRORS as exc:
        raise FileFormatError(f"{source.path}: damaged or truncated gzip data ({exc})") from exc


def row_chunks(source: SourceFile, skip: set[int], size: int, file_index: int, with_line: bool) -> Iterator[Chunk]:
    """Chunks of `size` rows decoded one by one (any format)."""
    rows = source.rows()
    decoder: RowDecoder | None = None
    for index in itertools.count():
        batch = itertools.islice(rows, size)
        first = next(batch, None)
        if first is None:
            return
        items = itertools.chain([first], batch)
        chunk = Chunk(file_index, index)
        if index in skip:
            chunk.rows = sum(1 for _ in items)
        else:
            if decoder is None and source.columns:
                decoder = RowDecoder(source.columns)
            _add_rows(chunk, items, decoder, with_line)
        chunk.bytes_read = source.bytes_read
        yield chunk


def csv_chunks(source: SourceFile, skip: set[int], size: int, file_index: int, with_line: bool) -> Iterator[Chunk]:
    """CSV in chunks of `size` lines (extended to the end of a quoted field),
    each parsed and checked by Arrow; a chunk Arrow cannot take whole (a
    field count or encoding error, a newline inside a value, a blank line)
    is read row by row instead, with the same line numbers."""
    with source.open_binary() as stream:
        blocks = LineBlocks(stream)
        header = blocks.header()
        if header is None:
            return
        columns = source.read_header(header)
        decoder = RowDecoder(columns)
        index = 0
        while (block := blocks.next(size)) is not None:
            first_line, data, lines = block
            if index in skip:
                yield Chunk(file_index, index, lines, source.bytes_read)
            else:
                chunk = _arrow_chunk(data, first_line, lines, columns, decoder, with_line)
                if chunk is None:
                    chunk = _python_chunk(data, first_line, columns, decoder, with_line)
                chunk.file_index, chunk.index, chunk.bytes_read = file_index, index, source.bytes_read
                yield chunk
            index += 1


class LineBlocks:
    """A CSV byte stream cut into blocks of whole lines, each ending where
    no quoted field is open (an even number of quotes since the block began),
    found with C-speed `bytes.count`/`find` rather than by parsing."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._buffer = b""
        self._eof = False
        self._line_length = 128
        self.lines_read = 0

    def _fill(self, size: int) -> None:
        """Reads until `size` bytes are buffered or the file ends."""
        parts = [self._buffer]
        have = len(self._buffer)
        while have < size and not self._eof:
            data = self._stream.read(max(size - have, _READ_SIZE))
            if not data:
                self._eof = True
            parts.append(data)
            have += len(data)
        self._buffer = b"".join(parts)

    def _newline_after(self, start: int) -> int:
        """The index just past the next newline at or after `start` (the end at EOF), or -1."""
        while True:
            found = self._buffer.find(b"\n", start)
            if found >= 0:
                return found + 1
            if self._eof:
                return len(self._buffer) if start < len(self._buffer) else -1
            start = len(self._buffer)
            self._fill(len(self._buffer) + _READ_SIZE)

    def _take(self, end: int) -> tuple[int, bytes, int]:
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        # Lines as the csv module counts them: a lone CR ends one too.
        lines = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n") + (0 if data.endswith(b"\n") else 1)
        first = self.lines_read + 1
        self.lines_read += lines
        return first, data, lines

    def header(self) -> list[str] | None:
        """The first record, parsed as CSV."""
        self._fill(_READ_SIZE)
        end = self._newline_after(0)
        while end > 0 and self._buffer.count(b'"', 0, end) % 2:
            end = self._newline_after(end)
        if end < 0:
            return None
        _, data, _ = self._take(end)
        return next(csv.reader(io.StringIO(data.decode("utf-8", "replace"), newline="")), [])

    def next(self, lines: int) -> tuple[int, bytes, int] | None:
        """(first line number, bytes, line count) of the next block of about
        `lines` lines, or None at the end of the file."""
        self._fill(lines * self._line_length)
        if not self._buffer:
            return None
        # Count lines in a slightly short guess, then step line by line.
        end = min(len(self._buffer), int(lines * self._line_length * 0.97))
        while (count := self._buffer.count(b"\n", 0, end)) >= lines:
            end //= 2
        while count < lines and (after := self._newline_after(end)) > 0:
            end, count = after, count + 1
        # Extend to the end of an open quoted field, as far as the csv module
        # would read one (its field size limit).
        quotes, reach = self._buffer.count(b'"', 0, end), end + _QUOTE_REACH
        while quotes % 2 and end < reach and (after := self._newline_after(end)) > 0:
            quotes += self._buffer.count(b'"', end, after)
            end = after
        self._line_length = max(16, end // max(count, 1))
        return self._take(end)


def _arrow_chunk(
    data: bytes, first_line: int, lines: int, columns: list[str], decoder: RowDecoder, with_line: bool
) -> Chunk | None:
    try:
        table = pa_csv.read_csv(
            io.BytesIO(data),
            read_options=pa_csv.ReadOptions(column_names=[f"c{i}" for i in range(len(columns))]),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(len(columns))},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    if table.num_rows != lines:
        return None  # a value spans lines: line numbers need the row-by-row reader
    decoded, suspect = decode_batch(table, columns)
    kept = pc.indices_nonzero(pc.invert(suspect))
    decoded = decoded.add_column(0, "line", pc.add(kept, pa.scalar(first_line, pa.uint64())).cast(pa.int64()))
    rejects: list[Reject] = []
    rescued = []
    for at in pc.indices_nonzero(suspect).to_pylist():
        values = [table.column(c)[at].as_py() for c in range(table.num_columns)]
        record = _record(Row(first_line + at, values, ",".join(values)), decoder, rejects)
        if record is not None:
            rescued.append(record)
    if rescued:
        extra = pa.Table.from_pylist(
            [dict(zip(decoded.column_names, record, strict=True)) for record in rescued], schema=decoded.schema
        )
        decoded = pa.concat_tables([decoded, extra]).sort_by("line")
    if not with_line:
        decoded = decoded.drop_columns(["line"])
    out = io.BytesIO()
    if decoded.num_rows:
        pa_csv.write_csv(decoded, out, pa_csv.WriteOptions(include_header=False))
    return Chunk(0, 0, lines, 0, decoded.num_rows, out.getvalue(), rejects)


def _python_chunk(data: bytes, first_line: int, columns: list[str], decoder: RowDecoder, with_line: bool) -> Chunk:
    reader = csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline=""))
    chunk = Chunk(0, 0)
    _add_rows(chunk, csv_records(reader, len(columns), first_line - 1), decoder, with_line)
    return chunk


def _add_rows(chunk: Chunk, items: Iterable[Row | Reject], decoder: RowDecoder | None, with_line: bool) -> None:
    """Decodes `items` into `chunk`: valid rows as CSV, the rest as rejects."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    chunk.rows = 0
    for item in items:
        chunk.rows += 1
        if isinstance(item, Reject):
            chunk.rejects.append(item)
        elif (record := _record(item, decoder, chunk.rejects)) is not None:
            writer.writerow(record if with_line else record[1:])
            chunk.valid += 1
    chunk.csv = buffer.getvalue().encode("utf-8")


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
    files: list[tuple[int, str, set[int]]],
    file_format: int,
    size: int,
    with_line: bool,
    buckets: Buckets,
    out: multiprocessing.Queue[object],
) -> None:
    _exit_with_parent()
    try:
        for file_index, path, skip in files:
            source = SourceFile(path, file_format, buckets)
            for chunk in chunks(source, skip, size, file_index, with_line):
                out.put(chunk)
            out.put(FileEnd(file_index, source.size))
        out.put(_END)
    except FileFormatError as exc:
        out.put((_ERROR, str(exc)))
    except OSError as exc:  # storage unreachable or a file gone, past the clients' own retries
        out.put((_UNREADABLE, str(exc).strip()[:300]))  # the importer says what could not be read


class ChunkReader:
    """Chunks of several files, produced in order by one child process and
    awaited one by one; each file's last chunk is followed by a `FileEnd`."""

    def __init__(
        self,
        files: list[tuple[int, str, set[int]]],
        file_format: int,
        size: int,
        with_line: bool = True,
        buckets: Buckets | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._queue: multiprocessing.Queue[object] = context.Queue(maxsize=_QUEUE_DEPTH)
        self._process = context.Process(
            target=_produce, args=(files, file_format, size, with_line, buckets or Buckets(), self._queue), daemon=True
        )
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
        if item[0] == _UNREADABLE:
            raise SourceUnreadable(str(item[1]))
        raise FileFormatError(str(item[1]))

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)
        self._queue.close()
