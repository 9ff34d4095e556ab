"""Fixtures for the runtime tests; they live in runtime_harness (a module named `conftest`
collides across test folders when a test imports from it)."""

from runtime_harness import pair, prompt_texts  # noqa: F401
