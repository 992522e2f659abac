"""The committed generated code must match the .proto files (`make protos` regenerates)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["protos/master.proto", "protos/volume.proto", "protos/gateway.proto"]


@pytest.mark.timeout(60)
def test_generated_code_is_current(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *PROTOS],
                   cwd=ROOT, check=True)
    stale = []
    for generated in sorted((tmp_path / "protos").iterdir()):
        committed = ROOT / "protos" / generated.name
        if not committed.exists() or committed.read_bytes() != generated.read_bytes():
            stale.append(generated.name)
    assert not stale, f"stale generated code (run `make protos`): {stale}"
