"""specfleet's bundled speculative runtime: one server process per replica."""
