"""The committed generated code must match the .proto files (`make protos` regenerates).
protoc runs in this process, through grpc_tools.protoc.main."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["protos/master.proto", "protos/volume.proto", "protos/gateway.proto"]


@pytest.mark.timeout(60)
def test_generated_code_is_current(tmp_path, monkeypatch):
    # Importing grpc_tools.protoc would otherwise add an import hook for .proto files.
    monkeypatch.setenv("GRPC_PYTHON_DISABLE_DYNAMIC_STUBS", "1")
    protoc = pytest.importorskip("grpc_tools.protoc")
    well_known = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={tmp_path}",
                        f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                        *(str(ROOT / p) for p in PROTOS), f"-I{well_known}"])
    assert code == 0
    stale = []
    for generated in sorted((tmp_path / "protos").iterdir()):
        committed = ROOT / "protos" / generated.name
        if not committed.exists() or committed.read_bytes() != generated.read_bytes():
            stale.append(generated.name)
    assert not stale, f"stale generated code (run `make protos`): {stale}"
