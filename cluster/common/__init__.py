"""Small helpers shared by the servers, the CLI and the FUSE driver.

Nothing here imports a server or the driver: fids, the errno/status table, gRPC channel and
server plumbing, chunk-interval arithmetic, the /status + /metrics HTTP endpoint.
"""
