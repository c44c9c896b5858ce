"""Catalog imports straight from cloud buckets, as the migration from Google
Cloud runs in ECS: `gs://` against a local Cloud Storage server
(gcp-storage-emulator) and `s3://` against moto's S3 server, with the cases
of the local imports: every format, gzip, shards by glob, bad rows with
their line numbers, a damaged file, refusals, and a killed import resumed
after its last committed chunk. (AWS and Google themselves cannot run here;
the emulators speak their HTTP APIs.)"""

from __future__ import annotations

import csv
import gzip
import io
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from google.longrunning import operations_pb2
from google.rpc import code_pb2

from bmc.product.v1 import product_pb2, product_service_pb2
from services.cli.cluster import Cluster
from services.product.synth import COLUMNS, products, write_shards
from tests.conftest import make_settings
from tests.integration.product_helpers import catalog, result_of, violations

BUCKETS = {"gs": "exports", "s3": "landing"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Emulators:
    """A Cloud Storage server and an S3 server on loopback, with a bucket each."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from moto.server import ThreadedMotoServer

        gcs_port, s3_port = _free_port(), _free_port()
        self._gcs_server = create_server("127.0.0.1", gcs_port, in_memory=True, default_bucket=BUCKETS["gs"])
        self._gcs_server.start()
        self._s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
        self._s3_server.start()
        self.gcs_endpoint, self.s3_endpoint = f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{s3_port}"
        self._gcs: Any = storage.Client(
            project="emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": f"http://{self.gcs_endpoint}"},
        )
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self._s3.create_bucket(Bucket=BUCKETS["s3"])

    def put(self, scheme: str, key: str, data: bytes) -> str:
        """Uploads `data` and returns its URI."""
        if scheme == "gs":
            self._gcs.bucket(BUCKETS["gs"]).blob(key).upload_from_string(data)
        else:
            self._s3.put_object(Bucket=BUCKETS["s3"], Key=key, Body=data)
        return f"{scheme}://{BUCKETS[scheme]}/{key}"

    def stop(self) -> None:
        self._s3_server.stop()
        self._gcs_server.stop()


@pytest.fixture(scope="module")
def emulators() -> Iterator[Emulators]:
    started = Emulators()
    yield started
    started.stop()


def _settings(tmp: Path, emulators: Emulators, **overrides: object) -> Any:
    return make_settings(
        tmp,
        "embedded",
        import_roots=f"{tmp},gs://{BUCKETS['gs']}/bq,s3://{BUCKETS['s3']}/bq",
        import_gcs_endpoint=emulators.gcs_endpoint,
        import_s3_endpoint=emulators.s3_endpoint,
        **overrides,
    )


@pytest.fixture(scope="module")
def product(emulators: Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A product service reading the two buckets (and nothing else of them)."""
    with Cluster(_settings(tmp_path_factory.mktemp("remote"), emulators), services=["product"]) as cluster:
        yield cluster


def _upload_shards(emulators: Emulators, scheme: str, local: list[Path], prefix: str) -> None:
    for path in local:
        emulators.put(scheme, f"{prefix}/{path.name}", path.read_bytes())


@pytest.mark.parametrize("scheme", ["gs", "s3"])
@pytest.mark.parametrize(("fmt", "compress"), [("csv", False), ("csv", True), ("ndjson", True), ("parquet", False)])
def test_each_format_from_shards_by_glob(
    product: Cluster, emulators: Emulators, tmp_path: Path, scheme: str, fmt: str, compress: bool
) -> None:
    local = write_shards(tmp_path, 2_500, fmt, shards=3, compress=compress, seed=11)
    prefix = f"bq/{uuid.uuid4().hex[:8]}"
    _upload_shards(emulators, scheme, local, prefix)
    emulators.put(scheme, f"{prefix}/README.txt", b"not an export: the glob must not take it")
    pattern = f"{scheme}://{BUCKETS[scheme]}/{prefix}/products-*{''.join(local[0].suffixes)}"
    with catalog(product.settings) as cat:
        first = result_of(cat.import_and_wait([pattern]))
        again = result_of(cat.import_and_wait([pattern]))
        meta = product_pb2.ImportProductsMetadata()
        listed = cat.ListOperations(operations_pb2.ListOperationsRequest(name="operations", page_size=1))
        listed.operations[0].metadata.Unpack(meta)
    assert first.rows_read == 2_500
    assert first.rejected == 0
    assert first.inserted + first.updated + first.unchanged == 2_500
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2_500), "a re-import must change nothing"
    assert sorted(meta.uris) == [f"{scheme}://{BUCKETS[scheme]}/{prefix}/{p.name}" for p in local]
    assert meta.bytes_read == meta.bytes_total == sum(p.stat().st_size for p in local)


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_bad_rows_are_rejected_with_their_line_numbers(
    product: Cluster, emulators: Emulators, tmp_path: Path, scheme: str
) -> None:
    code = f"B{uuid.uuid4().hex[:6].upper()}"
    good = next(iter(products(1, seed=3)))

    def line(**changes: str) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow({**good, **changes}[column] for column in COLUMNS)
        return out.getvalue()

    lines = [
        ",".join(COLUMNS),
        line(code=f"{code}1"),
        line(code=""),  # line 3
        line(code=f"{code}2", category="MINERAL"),  # line 4
        f"{code}3,too,few",  # line 5
        line(code=f"{code}4", display_name="Café pergamino"),
    ]
    uri = emulators.put(scheme, f"bq/{code}/mixed.csv.gz", gzip.compress(("\n".join(lines) + "\n").encode()))
    with catalog(product.settings) as cat:
        result = result_of(cat.import_and_wait([uri]))
    assert (result.rows_read, result.inserted, result.rejected) == (5, 2, 3)
    with Path(result.reject_report_uri.removeprefix("file://")).open(encoding="utf-8") as report:
        rejects = {int(r["line"]): (r["reason"], r["file"]) for r in csv.DictReader(report)}
    assert rejects == {
        3: ("MISSING_CODE", uri),
        4: ("INVALID_CATEGORY", uri),
        5: ("WRONG_FIELD_COUNT", uri),
    }


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_damaged_files_fail_the_import_clearly(product: Cluster, emulators: Emulators, scheme: str) -> None:
    run = uuid.uuid4().hex[:8]
    rows = "code,display_name,category,processing_level\n" + "X1,Maíz,AGRICULTURAL,NONE\n" * 5000
    full = gzip.compress(rows.encode())
    truncated = emulators.put(scheme, f"bq/{run}/products.csv.gz", full[: len(full) // 2])
    fake_parquet = emulators.put(scheme, f"bq/{run}/products.parquet", b"code,name\nA,B\n")
    with catalog(product.settings) as cat:
        for uri, expected in ((truncated, "truncated gzip"), (fake_parquet, "not a Parquet file")):
            operation = cat.import_and_wait([uri])
            assert operation.error.code == code_pb2.INVALID_ARGUMENT
            assert expected in operation.error.message
            assert uri in operation.error.message, "the error names the object"


def test_only_the_configured_bucket_prefixes_are_readable(product: Cluster, emulators: Emulators) -> None:
    outside = emulators.put("gs", "private/secrets.csv", b"code,display_name\nA,B\n")
    uris = [
        outside,  # the bucket is a root only under bq/
        "gs://exports/bq/../private/secrets.csv",
        "s3://other-bucket/bq/products.csv",
        "s3://landing/bq/nothing-here-*.csv",
        "gs://exports/bq/nothing-here.csv",
    ]
    with catalog(product.settings) as cat, pytest.raises(grpc.RpcError) as caught:
        cat.ImportProducts(product_service_pb2.ImportProductsRequest(uris=uris))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [
        ("uris[0]", "OUTSIDE_IMPORT_ROOTS"),
        ("uris[1]", "INVALID_URI"),
        ("uris[2]", "OUTSIDE_IMPORT_ROOTS"),
        ("uris[3]", "FILE_NOT_FOUND"),
        ("uris[4]", "FILE_NOT_FOUND"),
    ]


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_killed_import_resumes_from_its_last_committed_chunk(emulators: Emulators, tmp_path: Path, scheme: str) -> None:
    """A first load from a bucket, its service killed mid-way: every row inserted exactly once."""
    settings = _settings(tmp_path, emulators, import_chunk_rows=2_000, import_bulk_rows=20_000)
    local = write_shards(tmp_path / "big", 60_000, "csv", shards=2, compress=True)
    prefix = f"bq/{uuid.uuid4().hex[:8]}"
    _upload_shards(emulators, scheme, local, prefix)
    with Cluster(settings, services=["product"]) as cluster:
        with catalog(settings) as cat:
            operation = cat.ImportProducts(
                product_service_pb2.ImportProductsRequest(uris=[f"{scheme}://{BUCKETS[scheme]}/{prefix}/*.csv.gz"])
            )
            meta = cat.progress_past(operation.name, 10_000)
        cluster.kill("product")
        assert meta.progress.done < 60_000, "import finished before it could be killed"
        cluster.restart("product")
        with catalog(settings) as cat:
            result = result_of(cat.wait(operation.name))
    assert result.rows_read == 60_000
    assert result.inserted == 60_000, "every product inserted exactly once across the restart"
