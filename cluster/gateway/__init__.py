"""The gateway: receives chunk streams over ZMQ, writes each chunk to every replica, commits."""
