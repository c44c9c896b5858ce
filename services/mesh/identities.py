"""The mesh's identities on this machine: the dev mesh CA (a CA of its own:
a certificate it issues is valid for the mesh only) gives each sidecar a
short-lived certificate whose URI SAN is its SPIFFE ID, written where the
sidecar's SDS files point. Re-issuing replaces the files atomically and
then the SDS files, which Envoy watches: new certificates apply without a
restart and without a failed call."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import grpc

from services.kit.files import write_private
from services.kit.pki import DevPki
from services.mesh.render import sds_files

MESH_CA_NAME = "BMC Registry development mesh CA"
LIFETIME = dt.timedelta(hours=12)


def mesh_pki(pki_dir: Path) -> DevPki:
    return DevPki(pki_dir / "mesh", MESH_CA_NAME)


def directory(pki_dir: Path, identity: str) -> Path:
    """Where the sidecar of `identity` finds its certificate (see render.local_placement)."""
    return pki_dir / "mesh" / identity


def issue(pki_dir: Path, identity: str, spiffe_id: str, lifetime: dt.timedelta = LIFETIME) -> Path:
    """(Re-)issues the certificate of `identity` and its SDS files; their directory."""
    pki = mesh_pki(pki_dir)
    target = directory(pki_dir, identity)
    issued = pki.workload(identity, spiffe_id, lifetime)
    install(target, issued.certificate, issued.private_key, pki.ca_certificate())
    return target


def install(target: Path, certificate: bytes, private_key: bytes, trusted_ca: bytes) -> None:
    """Puts a certificate, its key and the CA to trust where a sidecar's SDS
    files point, and (last) the SDS files themselves: moving them into the
    watched directory is what makes Envoy reload."""
    target.mkdir(parents=True, exist_ok=True)
    _replace(target / "cert.pem", certificate)
    _replace(target / "key.pem", private_key, private=True)
    _replace(target / "ca.pem", trusted_ca)
    for name, content in sds_files(target).items():
        _replace(target / name, json.dumps(content).encode())


def _replace(path: Path, content: bytes, private: bool = False) -> None:
    """Writes `path` atomically (a reader sees the old file or the new one)."""
    if private:
        write_private(path, content)
        return
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def client_credentials(directory: Path) -> grpc.ChannelCredentials:
    """Mutual TLS as the identity whose files are in `directory` (cert.pem,
    key.pem), trusting the CA beside them (ca.pem)."""
    return grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.pem").read_bytes(),
        private_key=(directory / "key.pem").read_bytes(),
        certificate_chain=(directory / "cert.pem").read_bytes(),
    )
