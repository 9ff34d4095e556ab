"""Replicas sharing a host's CPU split its cores instead of each taking all of them."""

from __future__ import annotations

import os
from pathlib import Path

from specfleet.local.replicas import serve_argv, threads_per_replica


def argv(threads: int | None) -> list[str]:
    return serve_argv(
        model=Path("/m"), draft=None, port=1, admin_token_file=Path("/t"), method="ngram", k_max=4,
        max_batch=8, max_model_len=256, speculation=None, device="cpu", served_model_name=None,
        extra_args=[], threads=threads,
    )


def test_cpu_threads_are_shared_out_between_replicas_and_never_none() -> None:
    assert threads_per_replica(2, cpus=2) == 1
    assert threads_per_replica(1, cpus=8) == 8
    assert threads_per_replica(3, cpus=8) == 2
    assert threads_per_replica(16, cpus=2) == 1
    assert threads_per_replica(1) == len(os.sched_getaffinity(0))  # the cores this process may use


def test_the_share_is_passed_to_serve_and_left_to_torch_without_one() -> None:
    with_share = argv(3)
    assert with_share[with_share.index("--threads") + 1] == "3"
    assert "--threads" not in argv(None)
