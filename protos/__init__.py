"""Remote schemas (.proto) and the code generated from them by `make protos`.

Only the .proto files are written by hand; the *_pb2*.py files beside them are generated
(committed so a checkout runs without grpcio-tools) and tests/unit/test_protos_current.py
fails when they are stale.
"""
