"""protoc plugin: generates `*_pb2_grpc.py` by handing the request to grpc_tools.protoc.

grpcio-tools ships the gRPC Python generator only inside `grpc_tools.protoc`, not as a
`protoc-gen-*` binary, so buf cannot call it directly. This plugin writes the request's
descriptors to a temporary descriptor set, runs grpc_tools over it, and returns the files.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory() as tmp:
        descriptor_set = descriptor_pb2.FileDescriptorSet(file=list(request.proto_file))
        set_path = Path(tmp, "set.binpb")
        set_path.write_bytes(descriptor_set.SerializeToString())
        out = Path(tmp, "out")
        out.mkdir()
        args = ["grpc_tools.protoc", f"--descriptor_set_in={set_path}", f"--grpc_python_out={out}"]
        if protoc.main([*args, *request.file_to_generate]) != 0:
            response.error = "grpc_tools.protoc failed"
        for path in sorted(out.rglob("*.py")):
            response.file.add(name=str(path.relative_to(out)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
