"""Bulk imports end to end: every format, shards, gzip, idempotence, rejects,
broken files, cancellation, and resuming after the service is killed."""

from __future__ import annotations

import csv
import gzip
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from google.longrunning import operations_pb2
from google.rpc import code_pb2

from bmc.product.v1 import product_pb2, product_service_pb2
from services.cli.cluster import Cluster
from services.kit.settings import Settings
from services.product.synth import COLUMNS, products, write_shards
from tests.conftest import Platform, make_settings
from tests.integration.database import rows
from tests.integration.product_helpers import catalog, result_of, violations


def _rows(prefix: str, count: int) -> list[dict[str, str]]:
    return [{**row, "code": f"{prefix}{i:06d}"} for i, row in enumerate(products(count, seed=3))]


def _write_csv(path: Path, rows: list[dict[str, str]], compress: bool = False) -> Path:
    opener = gzip.open if compress else open
    with opener(path, "wt", newline="", encoding="utf-8") as handle:  # type: ignore[operator]
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rejects(uri: str) -> dict[int, str]:
    with Path(uri.removeprefix("file://")).open(encoding="utf-8") as report:
        return {int(r["line"]): r["reason"] for r in csv.DictReader(report)}


def _get(settings: Settings, codes: list[str]) -> dict[str, product_pb2.Product]:
    with catalog(settings) as cat:
        response = cat.BatchGetProducts(
            product_service_pb2.BatchGetProductsRequest(names=[f"products/{c}" for c in codes])
        )
    return {p.code: p for p in response.products}


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
@pytest.mark.parametrize("compress", [False, True])
def test_import_each_format_from_several_shards(platform: Platform, tmp_path: Path, fmt: str, compress: bool) -> None:
    if fmt == "parquet" and compress:
        pytest.skip("Parquet compresses inside the file")
    paths = write_shards(tmp_path, 2_500, fmt, shards=3, compress=compress, seed=int(uuid.uuid4().int % 10_000))
    # Synthetic codes depend only on position, so other runs may have loaded them: count all outcomes.
    with catalog(platform.settings) as cat:
        before = result_of(cat.import_and_wait([str(p) for p in paths]))
        again = result_of(cat.import_and_wait([str(tmp_path / f"*{paths[0].suffix}")]))
    assert before.rows_read == 2_500
    assert before.rejected == 0
    assert before.inserted + before.updated + before.unchanged == 2_500
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2_500), "a re-import must change nothing"
    got = _get(platform.settings, ["P0000000000", "P0000002499"])
    assert set(got) == {"P0000000000", "P0000002499"}


def test_changed_rows_are_updated_with_history_and_cache_invalidated(platform: Platform, tmp_path: Path) -> None:
    prefix = f"U{uuid.uuid4().hex[:6].upper()}"
    rows = _rows(prefix, 100)
    with catalog(platform.settings) as cat:
        result_of(cat.import_and_wait([str(_write_csv(tmp_path / "v1.csv", rows))]))
        cached = _get(platform.settings, [f"{prefix}000007"])  # now in Redis
        rows[7]["display_name"] = "Nombre corregido"
        second = result_of(cat.import_and_wait([str(_write_csv(tmp_path / "v2.csv", rows))]))
        history = cat.ListProductRevisions(
            product_service_pb2.ListProductRevisionsRequest(name=f"products/{prefix}000007")
        )
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 99)
    assert cached[f"{prefix}000007"].display_name != "Nombre corregido"
    assert _get(platform.settings, [f"{prefix}000007"])[f"{prefix}000007"].display_name == "Nombre corregido"
    assert [r.product.revision for r in history.revisions] == [2, 1]
    assert history.revisions[0].change.startswith("import productOperations/")


def test_bad_rows_are_rejected_with_line_numbers_and_good_rows_kept(platform: Platform, tmp_path: Path) -> None:
    prefix = f"R{uuid.uuid4().hex[:6].upper()}"
    path = tmp_path / "mixed.csv"
    good = _rows(prefix, 5)

    def line(row: dict[str, str]) -> str:
        return ",".join(f'"{row[c]}"' for c in COLUMNS)

    lines = [",".join(COLUMNS)]
    lines += [line(r) for r in good[:2]]
    lines.append(",Sin código,x,AGRICULTURAL,,NONE,KGM,,")  # line 4: missing code
    lines.append(f"{prefix}X1,Producto,x,MINERAL,,NONE,KGM,,")  # line 5: unknown category
    lines.append(f"{prefix}X2,too,few")  # line 6: wrong field count
    lines += [line(r) for r in good[2:]]
    data = ("\n".join(lines) + "\n").encode()
    data = data.replace(b"Sin c\xc3\xb3digo", b"Sin c\xf3digo")  # Latin-1 byte: line 4 is also badly encoded
    path.write_bytes(data + f"{prefix}X3,Caf\xe9 latin1,x,AGRICULTURAL,,NONE,KGM,,\n".encode("latin-1"))  # line 10
    with catalog(platform.settings) as cat:
        result = result_of(cat.import_and_wait([str(path)]))
    assert (result.rows_read, result.inserted, result.rejected) == (9, 5, 4)
    assert _rejects(result.reject_report_uri) == {
        4: "INVALID_ENCODING",
        5: "INVALID_CATEGORY",
        6: "WRONG_FIELD_COUNT",
        10: "INVALID_ENCODING",
    }


def test_ndjson_malformed_lines_are_rejected(platform: Platform, tmp_path: Path) -> None:
    prefix = f"J{uuid.uuid4().hex[:6].upper()}"
    rows = _rows(prefix, 3)
    lines = [
        orjson.dumps(rows[0]),
        b'{"code": "broken", ',
        b"[1, 2]",
        orjson.dumps({**rows[1], "code": ""}),
        orjson.dumps(rows[2]),
    ]
    path = tmp_path / "products.ndjson.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    with catalog(platform.settings) as cat:
        result = result_of(cat.import_and_wait([str(path)]))
    assert (result.inserted, result.rejected) == (2, 3)
    assert _rejects(result.reject_report_uri) == {2: "MALFORMED_JSON", 3: "NOT_AN_OBJECT", 4: "MISSING_CODE"}


def _failure(platform: Platform, path: Path) -> operations_pb2.Operation:
    with catalog(platform.settings) as cat:
        operation = cat.import_and_wait([str(path)])
    assert operation.HasField("error")
    return operation


def test_binary_file_fails_the_import_clearly(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_bytes(bytes(range(256)) * 64)
    operation = _failure(platform, path)
    assert operation.error.code == code_pb2.INVALID_ARGUMENT
    assert "binary data, not CSV" in operation.error.message


def test_truncated_gzip_fails_the_import_clearly(platform: Platform, tmp_path: Path) -> None:
    full = gzip.compress(
        ("code,display_name,category,processing_level\n" + "X1,Maíz,AGRICULTURAL,NONE\n" * 5000).encode()
    )
    path = tmp_path / "products.csv.gz"
    path.write_bytes(full[: len(full) // 2])
    operation = _failure(platform, path)
    assert operation.error.code == code_pb2.INVALID_ARGUMENT
    assert "truncated gzip" in operation.error.message


def test_fake_parquet_fails_the_import_clearly(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "products.parquet"
    path.write_text("code,name\nA,B\n")
    assert "not a Parquet file" in _failure(platform, path).error.message


def test_missing_file_is_refused_before_starting(platform: Platform, tmp_path: Path) -> None:
    with catalog(platform.settings) as cat, pytest.raises(grpc.RpcError) as caught:
        cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(tmp_path / "nope-*.csv")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [("uris[0]", "FILE_NOT_FOUND")]


def test_same_request_id_returns_the_same_operation(platform: Platform, tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "p.csv", _rows(f"I{uuid.uuid4().hex[:6].upper()}", 10))
    request_id = uuid.uuid4().hex
    with catalog(platform.settings) as cat:
        first = cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(path)], request_id=request_id))
        second = cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(path)], request_id=request_id))
        cat.wait(first.name)
    assert first.name == second.name


@pytest.fixture
def product_only(tmp_path: Path) -> Iterator[Cluster]:
    """A product service of its own, with small chunks, that tests may kill."""
    settings = make_settings(tmp_path, "embedded", import_chunk_rows=2_000, import_bulk_rows=20_000)
    with Cluster(settings, services=["product"]) as cluster:
        yield cluster


def test_killed_import_resumes_from_its_last_committed_chunk(product_only: Cluster, tmp_path: Path) -> None:
    """A first load (empty catalog): killed mid-way, resumed, indexed once and swapped in."""
    settings = product_only.settings
    schema_before = _schema(product_only)
    paths = write_shards(tmp_path / "big", 60_000, "csv", shards=2)
    with catalog(settings) as cat:
        operation = cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(p) for p in paths]))
        meta = cat.progress_past(operation.name, 10_000)
    product_only.kill("product")
    committed_before_restart = meta.progress.done
    assert committed_before_restart < 60_000, "import finished before it could be killed"
    product_only.restart("product")
    with catalog(settings) as cat:
        result = result_of(cat.wait(operation.name))
        total = cat.ListProducts(product_service_pb2.ListProductsRequest(code_prefix="P", page_size=1))
    assert result.rows_read == 60_000
    assert result.inserted + result.updated + result.unchanged == 60_000
    assert result.inserted == 60_000, "every product inserted exactly once across the restart"
    assert total.products
    assert _schema(product_only) == schema_before, "the loaded table must have the catalog's exact shape"
    with catalog(settings) as cat:
        found = cat.ListProducts(product_service_pb2.ListProductsRequest(name_query="Cafe pergamino", page_size=5))
    assert found.products
    assert all("pergamino" in p.display_name for p in found.products)


def _schema(cluster: Cluster) -> list[tuple[object, ...]]:
    """Columns (type, nullability, default, collation) and index definitions of `products`."""
    return [
        *rows(
            cluster,
            "product",
            """
            SELECT column_name, data_type, is_nullable, column_default, collation_name
            FROM information_schema.columns WHERE table_name = 'products' ORDER BY ordinal_position
            """,
        ),
        *rows(cluster, "product", "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'products' ORDER BY 1"),
        *rows(cluster, "product", "SELECT 'options', reloptions FROM pg_class WHERE relname = 'products'"),
    ]


def _search_indexes(cluster: Cluster) -> dict[object, object]:
    """The secondary indexes of `products` and their OIDs (a rebuilt index gets a new one)."""
    return dict(
        rows(
            cluster,
            "product",
            "SELECT c.relname, c.oid::bigint FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'products'::regclass AND NOT i.indisprimary",
        )
    )


def test_bulk_merge_rebuilds_search_indexes_only_when_rows_change(product_only: Cluster, tmp_path: Path) -> None:
    """A large import into a loaded catalog: re-importing the same export
    writes nothing and keeps the indexes; a changed one is merged without
    them (history kept) and they are rebuilt once."""
    settings = product_only.settings
    rows = _rows("BLK", 30_000)
    same = [str(_write_csv(tmp_path / "same.csv", rows))]
    with catalog(settings) as cat:
        result_of(cat.import_and_wait(same))
        built = _search_indexes(product_only)
        unchanged = result_of(cat.import_and_wait(same))
        kept = _search_indexes(product_only)
        changed = [{**row, "description": row["description"] + " (revisado)"} for row in rows]
        updated = result_of(cat.import_and_wait([str(_write_csv(tmp_path / "changed.csv", changed))]))
        rebuilt = _search_indexes(product_only)
        found = cat.ListProducts(product_service_pb2.ListProductsRequest(name_query="Cafe pergamino", page_size=5))
    assert (unchanged.unchanged, unchanged.updated, unchanged.inserted) == (30_000, 0, 0)
    assert kept == built, "an unchanged re-import must not rebuild the search indexes"
    assert (updated.updated, updated.unchanged) == (30_000, 0)
    assert set(rebuilt) == set(built)
    assert rebuilt != built, "a rewrite of most rows drops and rebuilds them"
    product = _get(settings, ["BLK000007"])["BLK000007"]
    assert product.description.endswith("(revisado)")
    assert product.revision == 2
    assert found.products


def test_cancel_stops_after_the_current_chunk(product_only: Cluster, tmp_path: Path) -> None:
    paths = write_shards(tmp_path / "big", 40_000, "ndjson", shards=1)
    with catalog(product_only.settings) as cat:
        operation = cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=[str(p) for p in paths]))
        time.sleep(0.3)
        cat.CancelOperation(operations_pb2.CancelOperationRequest(name=operation.name))
        done = cat.wait(operation.name)
    if done.HasField("response"):
        pytest.skip("the import finished before the cancellation arrived")
    assert done.error.code == code_pb2.CANCELLED
    meta = product_pb2.ImportProductsMetadata()
    done.metadata.Unpack(meta)
    assert meta.progress.cancel_requested
    assert meta.progress.done < 40_000


def test_list_operations_pages_newest_first(platform: Platform, tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "p.csv", _rows(f"L{uuid.uuid4().hex[:6].upper()}", 3))
    with catalog(platform.settings) as cat:
        names = [cat.import_and_wait([str(path)]).name for _ in range(3)]
        first = cat.ListOperations(operations_pb2.ListOperationsRequest(page_size=2))
        second = cat.ListOperations(operations_pb2.ListOperationsRequest(page_size=2, page_token=first.next_page_token))
    assert [o.name for o in first.operations] == names[::-1][:2]
    assert second.operations[0].name == names[0]
    assert all(o.done for o in first.operations)
