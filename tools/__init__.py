"""The `kelp` command line: run nodes, run a local cluster, move files in and out."""
