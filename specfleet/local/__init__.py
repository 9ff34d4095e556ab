"""The local fleet behind `specfleet up`: replica processes, Prometheus, router, live view."""
