"""The client side: the FUSE driver and the client library the CLI shares (master, gateway
and volume clients, the chunk reader). Imports protos and cluster.common only, never a server.
"""
