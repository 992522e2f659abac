"""The volume server: needles in append-only, replicated volume files."""
