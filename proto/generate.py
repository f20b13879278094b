#!/usr/bin/env python3
"""Regenerate (or check) ferrobeam's copy of Beam's model protos.

Beam's wire protocol is whatever the pinned ``apache-beam`` package was built
with, so we never hand-write .proto files: this script serialises the file
descriptors embedded in that package's generated ``*_pb2`` modules (plus their
google/protobuf dependencies) into one ``FileDescriptorSet``.  The Rust build
(``runner/proto/build.rs``) compiles that set with prost/tonic.

    python proto/generate.py          # rewrite proto/beam_model.binpb
    python proto/generate.py --check  # exit 1 if the checked-in set is stale
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import sys

from google.protobuf import descriptor_pb2

PINNED_BEAM_VERSION = "2.77.0"
OUT = pathlib.Path(__file__).resolve().parent / "beam_model.binpb"

# Every Beam model module a runner talks through.  Dependencies (other Beam
# files, google/protobuf/*) are pulled in transitively.
MODULES = [
    "apache_beam.portability.api.org.apache.beam.model.pipeline.v1.beam_runner_api_pb2",
    "apache_beam.portability.api.org.apache.beam.model.pipeline.v1.endpoints_pb2",
    "apache_beam.portability.api.org.apache.beam.model.pipeline.v1.external_transforms_pb2",
    "apache_beam.portability.api.org.apache.beam.model.pipeline.v1.metrics_pb2",
    "apache_beam.portability.api.org.apache.beam.model.pipeline.v1.schema_pb2",
    "apache_beam.portability.api.org.apache.beam.model.pipeline.v1.standard_window_fns_pb2",
    "apache_beam.portability.api.org.apache.beam.model.fn_execution.v1.beam_fn_api_pb2",
    "apache_beam.portability.api.org.apache.beam.model.fn_execution.v1.beam_provision_api_pb2",
    "apache_beam.portability.api.org.apache.beam.model.job_management.v1.beam_job_api_pb2",
    "apache_beam.portability.api.org.apache.beam.model.job_management.v1.beam_artifact_api_pb2",
    "apache_beam.portability.api.org.apache.beam.model.job_management.v1.beam_expansion_api_pb2",
]


def build_descriptor_set() -> bytes:
    import apache_beam

    if apache_beam.__version__ != PINNED_BEAM_VERSION:
        sys.exit(
            f"apache-beam {apache_beam.__version__} is installed but ferrobeam pins "
            f"{PINNED_BEAM_VERSION}: pip install apache-beam=={PINNED_BEAM_VERSION}"
        )
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(file_descriptor) -> None:
        if file_descriptor.name in seen:
            return
        seen.add(file_descriptor.name)
        # Dependencies first, so protoc-style consumers see a topological order.
        for dep in file_descriptor.dependencies:
            visit(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        ordered.append(proto)

    for name in MODULES:
        visit(importlib.import_module(name).DESCRIPTOR)
    fds = descriptor_pb2.FileDescriptorSet(file=ordered)
    return fds.SerializeToString(deterministic=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the checked-in set is stale")
    args = parser.parse_args()
    data = build_descriptor_set()
    if args.check:
        current = OUT.read_bytes() if OUT.exists() else b""
        if current != data:
            print(f"{OUT} is stale: run python proto/generate.py", file=sys.stderr)
            return 1
        print(f"{OUT.name} matches apache-beam {PINNED_BEAM_VERSION}")
        return 0
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes) from apache-beam {PINNED_BEAM_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
