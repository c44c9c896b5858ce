"""Builds the contracts in proto/ into gen/ and into a descriptor image.

Third-party imports (google/api, google/rpc, google/type, google/longrunning,
buf/validate and the well-known types) are not copied into the repository:
their descriptors are taken from the installed Python packages
(googleapis-common-protos, protobuf, protovalidate) and handed to protoc as a
descriptor set.

    python tools/protogen.py            regenerate gen/ and build/bmc.binpb
    python tools/protogen.py --check    exit 1 when gen/ is stale
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import shutil
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = ROOT / "gen"
BUILD = ROOT / "build"
IMAGE = BUILD / "bmc.binpb"
DOCS_SET = "bmc/docs.binpb"

# Python modules whose descriptors the contracts import (and, through them,
# everything those import).
DEPENDENCY_MODULES = (
    "google.api.annotations_pb2",
    "google.api.client_pb2",
    "google.api.field_behavior_pb2",
    "google.api.httpbody_pb2",
    "google.api.resource_pb2",
    "google.longrunning.operations_proto_pb2",
    "google.rpc.status_pb2",
    "google.rpc.error_details_pb2",
    "google.type.date_pb2",
    "google.protobuf.duration_pb2",
    "google.protobuf.field_mask_pb2",
    "google.protobuf.struct_pb2",
    "google.protobuf.timestamp_pb2",
    "google.protobuf.empty_pb2",
)
VALIDATE_PROTO = "buf/validate/validate.proto"


def _collect(fd: FileDescriptor, out: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
    if fd.name in out:
        return
    for dep in fd.dependencies:
        _collect(dep, out)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    out[fd.name] = proto


def dependency_set() -> descriptor_pb2.FileDescriptorSet:
    """The descriptors of every third-party file, dependencies first."""
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for module in DEPENDENCY_MODULES:
        _collect(importlib.import_module(module).DESCRIPTOR, files)
    # protovalidate 2.x ships validate.proto only as a protobuf-py descriptor.
    from protovalidate._gen.buf.validate import validate_pb

    validate = descriptor_pb2.FileDescriptorProto.FromString(validate_pb.desc().proto.to_binary())
    for dep in validate.dependency:
        _collect(importlib.import_module(dep.replace("/", ".").removesuffix(".proto") + "_pb2").DESCRIPTOR, files)
    files[validate.name] = validate
    return descriptor_pb2.FileDescriptorSet(file=list(files.values()))


def contract_files(proto: Path = PROTO) -> list[str]:
    return sorted(str(p.relative_to(proto)) for p in proto.rglob("*.proto"))


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    rc = protoc.main(["grpc_tools.protoc", *args])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc}): {' '.join(args)}")


def generate(out: Path, image: Path, proto: Path = PROTO) -> None:
    """Writes Python modules, gRPC stubs and type stubs to `out`, and the
    descriptor image (with imports and source info) to `image`."""
    with tempfile.TemporaryDirectory() as tmp:
        deps = Path(tmp) / "deps.binpb"
        deps.write_bytes(dependency_set().SerializeToString())
        bin_dir = Path(sys.executable).parent
        common = [f"--descriptor_set_in={deps}", f"-I{proto}"]
        out.mkdir(parents=True, exist_ok=True)
        _protoc(
            [
                *common,
                f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out=quiet:{out}",
                f"--mypy_grpc_out=quiet:{out}",
                *contract_files(proto),
                VALIDATE_PROTO,
            ]
        )
        image.parent.mkdir(parents=True, exist_ok=True)
        _protoc(
            [
                *common,
                f"--descriptor_set_out={image}",
                "--include_imports",
                "--include_source_info",
                *contract_files(proto),
            ]
        )
        # The contracts' own comments, for the gateway's OpenAPI document.
        _protoc([*common, f"--descriptor_set_out={out / DOCS_SET}", "--include_source_info", *contract_files(proto)])
    # Generated imports are absolute (`from bmc.common.v1 import ...`): gen/
    # is an import root and these are ordinary packages under it.
    for directory in [p for p in out.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()
    (out / "py.typed").touch()


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def stale_files(current: Path, fresh: Path) -> list[str]:
    """Files that differ between the committed gen/ and a fresh build."""
    a, b = _tree(current), _tree(fresh)
    differing = sorted(a ^ b)
    differing += sorted(f for f in a & b if not filecmp.cmp(current / f, fresh / f, shallow=False))
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when gen/ differs from a fresh build")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "gen"
            generate(fresh, Path(tmp) / "bmc.binpb")
            stale = stale_files(GEN, fresh)
        if stale:
            print("gen/ is stale; run `make gen`. Differing files:", *stale, sep="\n  ", file=sys.stderr)
            return 1
        print("gen/ is up to date")
        return 0
    fresh_gen = BUILD / "gen.tmp"
    shutil.rmtree(fresh_gen, ignore_errors=True)
    generate(fresh_gen, IMAGE)
    shutil.rmtree(GEN, ignore_errors=True)
    fresh_gen.rename(GEN)
    print(f"generated {len(_tree(GEN))} files in gen/ and {IMAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
