"""Synthetic catalogs of any size, shaped like a Google Cloud export, to
measure imports and lookups at scale without real data."""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import orjson

from services.product.domain import DATA_FIELDS

COLUMNS = DATA_FIELDS
# (category, subcategory, processing, unit, vat, withholding, names)
FAMILIES = [
    ("AGRICULTURAL", "cereals/maize", "NONE", "TNE", "REDUCED", "UNPROCESSED", ["Maíz amarillo", "Maíz blanco"]),
    ("AGRICULTURAL", "cereals/rice", "PRIMARY", "TNE", "REDUCED", "UNPROCESSED", ["Arroz paddy", "Arroz verde"]),
    ("AGRICULTURAL", "coffee", "PRIMARY", "KGM", "REDUCED", "COFFEE", ["Café pergamino seco", "Café cereza"]),
    ("AGRICULTURAL", "fruit", "NONE", "KGM", "EXCLUDED", "UNPROCESSED", ["Plátano hartón", "Aguacate hass"]),
    ("AGRICULTURAL", "vegetables", "NONE", "KGM", "EXCLUDED", "UNPROCESSED", ["Papa pastusa", "Cebolla cabezona"]),
    ("AGRICULTURAL", "oilseeds", "NONE", "TNE", "REDUCED", "UNPROCESSED", ["Fruto de palma", "Soya en grano"]),
    ("LIVESTOCK", "cattle", "NONE", "NIU", "EXEMPT", "UNPROCESSED", ["Novillo gordo", "Ternero de levante"]),
    ("LIVESTOCK", "pigs", "NONE", "NIU", "EXCLUDED", "UNPROCESSED", ["Cerdo en pie"]),
    ("LIVESTOCK", "milk", "PRIMARY", "LTR", "EXEMPT", "UNPROCESSED", ["Leche cruda", "Leche fría"]),
    ("FISHING", "fish", "PRIMARY", "KGM", "EXEMPT", "UNPROCESSED", ["Tilapia roja", "Trucha arcoíris"]),
    ("AGROINDUSTRIAL", "sugar", "INDUSTRIAL", "KGM", "REDUCED", "PROCESSED", ["Azúcar refinada", "Panela"]),
    ("INPUTS", "fertilizers", "INDUSTRIAL", "KGM", "GENERAL", "NONE", ["Urea granulada", "Abono 15-15-15"]),
]
GRADES = ["tipo 1", "tipo 2", "extra", "premium", "corriente", "orgánico", "seleccionado", "de exportación"]
REGIONS = ["Meta", "Tolima", "Huila", "Córdoba", "Antioquia", "Santander", "Valle", "Nariño", "Boyacá", "Cesar"]


def products(count: int, seed: int = 7, start: int = 0) -> Iterator[dict[str, str]]:
    rng = random.Random(seed + start)  # noqa: S311 - test data, not secrets
    for number in range(start, start + count):
        category, sub, processing, unit, vat, withholding, names = FAMILIES[number % len(FAMILIES)]
        name = f"{rng.choice(names)} {rng.choice(GRADES)} {rng.choice(REGIONS)}"
        yield {
            "code": f"P{number:010d}",
            "display_name": name,
            "description": f"{name}, lote {rng.randrange(1, 10_000)}",
            "category": category,
            "subcategory": sub,
            "processing_level": processing,
            "unit_code": unit,
            "vat_treatment": vat,
            "withholding_class": withholding,
        }


def _open(path: Path, compress: bool) -> IO[bytes]:
    raw = path.open("wb")
    return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if compress else raw  # type: ignore[return-value]


def write_shards(
    directory: Path, count: int, fmt: str, shards: int, compress: bool = False, seed: int = 7
) -> list[Path]:
    """Writes `count` products over `shards` files named like a BigQuery export."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = {"csv": ".csv", "ndjson": ".ndjson", "parquet": ".parquet"}[fmt] + (
        ".gz" if compress and fmt != "parquet" else ""
    )
    paths = []
    per_shard = -(-count // shards)
    for shard in range(shards):
        start = shard * per_shard
        size = max(0, min(per_shard, count - start))
        path = directory / f"products-{shard:012d}{suffix}"
        rows = products(size, seed, start)
        if fmt == "parquet":
            _write_parquet(path, rows)
        else:
            with _open(path, compress) as handle:
                (_write_csv if fmt == "csv" else _write_ndjson)(handle, rows)
        paths.append(path)
    return paths


def _write_csv(handle: IO[bytes], rows: Iterator[dict[str, str]]) -> None:
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    text.flush()
    text.detach()


def _write_ndjson(handle: IO[bytes], rows: Iterator[dict[str, str]]) -> None:
    for row in rows:
        handle.write(orjson.dumps(row) + b"\n")


def _write_parquet(path: Path, rows: Iterator[dict[str, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        batch: list[dict[str, str]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == 100_000:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
