"""The master: namespace metadata, volume topology, fid assignment, placement, the reaper."""
