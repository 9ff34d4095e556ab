"""`specfleet bench`: benchmarks that write JSON and a PNG and print a table."""
