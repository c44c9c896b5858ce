"""The content-addressed object store: on a local directory, and on S3 as
spoken to a fake S3 server (moto's, over HTTP: AWS itself cannot run here)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from services.kit.objects import CorruptObject, LocalObjectStore, S3ObjectStore, object_store
from services.kit.settings import Settings
from tests.conftest import free_port_base

CONTENT = b"%PDF-1.7 certificado de registro"


@pytest.fixture(scope="module")
def fake_s3() -> Iterator[str]:
    """A fake S3 endpoint (moto), with credentials that only it accepts."""
    port = free_port_base() + 7
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "fake")
        env.setenv("AWS_SECRET_ACCESS_KEY", "fake")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield f"http://127.0.0.1:{port}"
    server.stop()


def test_local_objects_are_named_by_their_hash_and_checked_on_read(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    digest = store.put(CONTENT)
    assert digest == hashlib.sha256(CONTENT).hexdigest()
    assert store.put(CONTENT) == digest  # stored once
    assert store.get(digest) == CONTENT
    store.path(digest).write_bytes(CONTENT + b"!")
    with pytest.raises(CorruptObject):
        store.get(digest)
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)


def test_s3_objects_are_encrypted_at_rest_and_checked_on_read(fake_s3: str, tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=fake_s3)
    client.create_bucket(Bucket="bmc-certificates")
    settings = Settings(data_dir=tmp_path, object_store_s3_bucket="bmc-certificates", object_store_s3_endpoint=fake_s3)
    store = object_store(settings, "certificates/")
    assert isinstance(store, S3ObjectStore)
    digest = store.put(CONTENT)
    head = client.head_object(Bucket="bmc-certificates", Key=f"certificates/{digest}")
    assert head["ServerSideEncryption"] == "AES256"
    assert store.get(digest) == CONTENT
    client.put_object(Bucket="bmc-certificates", Key=f"certificates/{digest}", Body=CONTENT + b"!")
    with pytest.raises(CorruptObject):
        store.get(digest)
    with pytest.raises(FileNotFoundError):
        store.get("0" * 64)


def test_s3_uploads_can_use_a_kms_key(fake_s3: str) -> None:
    kms = boto3.client("kms", endpoint_url=fake_s3)
    key = kms.create_key(Description="certificates")["KeyMetadata"]["KeyId"]
    client = boto3.client("s3", endpoint_url=fake_s3)
    client.create_bucket(Bucket="bmc-kms")
    store = S3ObjectStore("bmc-kms", "c/", kms_key=key, client=client)
    digest = store.put(CONTENT)
    head = client.head_object(Bucket="bmc-kms", Key=f"c/{digest}")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"].split("/")[-1]) == ("aws:kms", key)
    assert store.get(digest) == CONTENT
