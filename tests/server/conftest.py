"""Fixtures for the server tests; they live in server_harness (a module named `conftest`
collides across test folders when a test imports from it)."""

from server_harness import model_pair, replica, restore_speculation  # noqa: F401
