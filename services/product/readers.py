"""Rows out of Google Cloud exports: CSV and newline-delimited JSON (plain or
gzip) and Parquet, read as a stream so memory stays flat whatever the size.

A bad row becomes a `Reject` with its line number and never stops the file;
a file that is not what it claims (binary, truncated gzip, not Parquet)
raises `FileFormatError` and fails the import with a clear message.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple, cast

import orjson

from bmc.product.v1 import product_pb2
from services.product.domain import DATA_FIELDS, canonical_column
from services.product.locations import Buckets, open_random_access, open_stream

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
RAW_LIMIT = 300
csv.field_size_limit(1 << 20)


class FileFormatError(Exception):
    """The file as a whole cannot be read as the format it claims."""


class SourceUnreadable(Exception):
    """The storage holding the file failed (past its client's retries), or the file is gone."""


def _known(columns: list[str]) -> str:
    """What a header without `code` holds, named only by the catalog's own
    column names: a file that is not an export (a server file, say) is
    never echoed back in an error."""
    known = [c for c in dict.fromkeys(columns) if c in DATA_FIELDS or c == "eligible"]
    found = f"of the catalog's columns it has {', '.join(known)}" if known else "it has none of the catalog's columns"
    return f"no `code` column ({len(columns)} column(s); {found})"


# What reading a damaged or truncated gzip stream raises.
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class Reject(NamedTuple):
    line: int
    field: str
    reason: str
    message: str
    raw: str


class Row(NamedTuple):
    line: int
    # A mapping of canonical names (JSON, Parquet), or the fields of a CSV
    # record in the order of `SourceFile.columns`.
    values: dict[str, Any] | list[str]
    raw: str


class CountingReader(io.RawIOBase):
    """Counts bytes taken from the underlying file (progress for .gz too)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.count += size
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


def detect_format(location: str, requested: int) -> int:
    if requested:
        return requested
    name = PurePosixPath(location).name.lower().removesuffix(".gz").removesuffix(".gzip")
    if name.endswith(".csv"):
        return product_pb2.IMPORT_FORMAT_CSV
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return product_pb2.IMPORT_FORMAT_NDJSON
    if name.endswith(".parquet"):
        return product_pb2.IMPORT_FORMAT_PARQUET
    raise FileFormatError(
        f"{location}: cannot tell the format from the name; give it explicitly (CSV, NDJSON, PARQUET)"
    )


class SourceFile:
    """One input file, local or in a bucket: its rows, and how many of its bytes were read."""

    def __init__(self, location: str | Path, requested_format: int, buckets: Buckets | None = None) -> None:
        self.path = str(location)  # as errors name it
        self.format = detect_format(self.path, requested_format)
        self._buckets = buckets or Buckets()
        with open_random_access(self._buckets, self.path) as handle:
            self.size = handle.seek(0, io.SEEK_END)
        self._counter: CountingReader | None = None
        self._parquet_rows_done = 0
        self._parquet_rows_total = 0
        self.columns: list[str] = []

    @property
    def bytes_read(self) -> int:
        if self.format == product_pb2.IMPORT_FORMAT_PARQUET:
            if not self._parquet_rows_total:
                return 0
            return self.size * self._parquet_rows_done // self._parquet_rows_total
        return self._counter.count if self._counter else 0

    def rows(self) -> Iterator[Row | Reject]:
        if self.format == product_pb2.IMPORT_FORMAT_PARQUET:
            yield from self._parquet_rows()
        else:
            with self.open_binary() as stream:
                reader = self._csv_rows if self.format == product_pb2.IMPORT_FORMAT_CSV else self._ndjson_rows
                yield from reader(stream)

    def open_binary(self) -> IO[bytes]:
        """The file's bytes (gunzipped), counted for progress; refuses binary data."""
        self._counter = CountingReader(open_stream(self._buckets, self.path))
        buffered = io.BufferedReader(self._counter, buffer_size=1 << 20)
        stream: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=buffered))
            if buffered.peek(2)[:2] == GZIP_MAGIC
            else cast(IO[bytes], buffered)
        )
        head = stream.peek(8192)[:8192] if hasattr(stream, "peek") else b""
        if b"\x00" in head:
            stream.close()
            raise FileFormatError(f"{self.path}: binary data, not {'CSV' if self.format == 1 else 'NDJSON'} text")
        return stream

    def read_header(self, header: list[str]) -> list[str]:
        """The canonical column names of a CSV header; FileFormatError without `code`."""
        columns = self.columns = [canonical_column(h.lstrip("\ufeff")) for h in header]
        if "code" not in columns:
            raise FileFormatError(f"{self.path}: the first line is not a catalog header: {_known(columns)}")
        return columns

    def _csv_rows(self, stream: IO[bytes]) -> Iterator[Row | Reject]:
        # surrogateescape keeps undecodable bytes as lone surrogates, so a row
        # in the wrong encoding is rejected alone instead of failing the file.
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline=""))
        try:
            header = next(reader)
        except StopIteration:
            return
        yield from csv_records(reader, len(self.read_header(header)), reader.line_num)

    def _ndjson_rows(self, stream: IO[bytes]) -> Iterator[Row | Reject]:
        for number, line in enumerate(stream, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                value = orjson.loads(stripped)
            except orjson.JSONDecodeError as exc:
                reason = "INVALID_ENCODING" if "utf-8" in str(exc).lower() else "MALFORMED_JSON"
                yield Reject(number, "", reason, str(exc), stripped[:RAW_LIMIT].decode("utf-8", "replace"))
                continue
            if not isinstance(value, dict):
                yield Reject(
                    number, "", "NOT_AN_OBJECT", "each line must be a JSON object", stripped[:RAW_LIMIT].decode()
                )
                continue
            yield Row(number, {canonical_column(k): v for k, v in value.items()}, stripped.decode())

    def _parquet_rows(self) -> Iterator[Row | Reject]:
        import pyarrow.parquet as pq

        handle = open_random_access(self._buckets, self.path)
        try:
            head = handle.read(4)
            handle.seek(max(self.size - 4, 0))
            tail = handle.read(4)
            if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
                raise FileFormatError(f"{self.path}: not a Parquet file (missing PAR1 magic)")
            handle.seek(0)
            try:
                parquet = pq.ParquetFile(handle)
            except Exception as exc:
                raise FileFormatError(f"{self.path}: unreadable Parquet ({exc})") from exc
            yield from self._parquet_batches(parquet)
        finally:
            handle.close()

    def _parquet_batches(self, parquet: Any) -> Iterator[Row | Reject]:
        self._parquet_rows_total = parquet.metadata.num_rows
        columns = [canonical_column(name) for name in parquet.schema_arrow.names]
        if "code" not in columns:
            raise FileFormatError(f"{self.path}: not a catalog export: {_known(columns)}")
        number = 0
        for batch in parquet.iter_batches(batch_size=65536):
            for record in batch.rename_columns(columns).to_pylist():
                number += 1
                yield Row(number, record, "")
            self._parquet_rows_done = number


def csv_records(reader: Iterator[list[str]], width: int, lines_before: int) -> Iterator[Row | Reject]:
    """Rows of a `csv.reader` past the header, numbered by physical line
    (`lines_before` lines of the file precede the reader's first line)."""
    line_num = cast(Any, reader).line_num
    offset = lines_before - line_num
    line = line_num
    for record in reader:
        start, line = offset + line + 1, cast(Any, reader).line_num
        if not record:
            continue
        joined = ",".join(record)
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            raw = joined.encode("utf-8", "surrogateescape").decode("latin-1")[:RAW_LIMIT]
            yield Reject(start, "", "INVALID_ENCODING", "row is not valid UTF-8", raw)
            continue
        if len(record) != width:
            yield Reject(
                start, "", "WRONG_FIELD_COUNT", f"expected {width} fields, found {len(record)}", joined[:RAW_LIMIT]
            )
            continue
        yield Row(start, record, joined)
