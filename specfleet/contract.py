"""The runtime <-> operator contract (DESIGN.md §3): the admin API body and metric names.

Torch-free on purpose: the operator image imports this module and must never pull in
torch or CUDA. Both the runtime server and the controller validate with these models, so
a schedule the controller builds is exactly a schedule the runtime accepts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SpeculationMethod = Literal["draft", "ngram"]

# Largest batch bound a schedule row may name; rows are inclusive, so this is "any batch".
MAX_SCHEDULE_BATCH = 1 << 20
MAX_K = 64
# Tokens per row of the startup calibration's verify-shaped passes (a K = 3 verify): the
# controller reads a calibrated verify pass over n tokens as n // 4 rows of 4.
CALIBRATION_VERIFY_WIDTH = 4

ADMIN_SPECULATION_PATH = "/admin/speculation"
POD_SPECULATION_ANNOTATION = "specfleet.io/speculation"


class SpeculationConfig(BaseModel):
    """Speculation settings in force on one replica; the body of GET/PUT /admin/speculation.

    `schedule` rows are `[batch_lo, batch_hi, K]`, inclusive and non-overlapping; a decode
    batch size outside every row runs with K=0. `enabled=False` means no draft work at all.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    method: SpeculationMethod = "draft"
    k_max: int = Field(default=8, ge=1, le=MAX_K)
    schedule: list[tuple[int, int, int]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_schedule(self) -> "SpeculationConfig":
        check_schedule(self.schedule, self.k_max)
        return self

    def k_for_batch(self, decode_batch: int) -> int:
        """Draft length for a step whose decode phase holds `decode_batch` sequences."""
        if not self.enabled:
            return 0
        for lo, hi, k in self.schedule:
            if lo <= decode_batch <= hi:
                return k
        return 0


class SpeculationUpdate(BaseModel):
    """A PUT body: fields left out keep the value in force (so `{"enabled": false}` works)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    method: SpeculationMethod | None = None
    k_max: int | None = Field(default=None, ge=1, le=MAX_K)
    schedule: list[tuple[int, int, int]] | None = None

    def apply_to(self, current: SpeculationConfig) -> SpeculationConfig:
        """The config that results from this update; raises pydantic.ValidationError."""
        merged = current.model_dump() | self.model_dump(exclude_none=True)
        return SpeculationConfig.model_validate(merged)


def check_schedule(schedule: list[tuple[int, int, int]], k_max: int) -> None:
    """Raise ValueError naming the offending row when a schedule is malformed."""
    for i, (lo, hi, k) in enumerate(schedule):
        row = f"schedule[{i}] = [{lo}, {hi}, {k}]"
        if lo < 1:
            raise ValueError(f"{row}: batch_lo must be >= 1")
        if lo > hi:
            raise ValueError(f"{row}: batch_lo > batch_hi")
        if hi > MAX_SCHEDULE_BATCH:
            raise ValueError(f"{row}: batch_hi must be <= {MAX_SCHEDULE_BATCH}")
        if k < 0:
            raise ValueError(f"{row}: K must be >= 0")
        if k > k_max:
            raise ValueError(f"{row}: K={k} exceeds k_max={k_max}")
    ordered = sorted(enumerate(schedule), key=lambda item: item[1][0])
    for (i, (lo_a, hi_a, _)), (j, (lo_b, hi_b, _)) in zip(ordered, ordered[1:]):
        if lo_b <= hi_a:
            raise ValueError(
                f"schedule[{j}] = [{lo_b}, {hi_b}, ...] overlaps schedule[{i}] = [{lo_a}, {hi_a}, ...]"
            )


def constant_schedule(k: int) -> list[tuple[int, int, int]]:
    """A schedule that uses the same K at every batch size."""
    return [(1, MAX_SCHEDULE_BATCH, k)] if k > 0 else []


class Metric:
    """Metric names (contract). vLLM's names where vLLM has the same meaning."""

    REQUESTS_RUNNING = "vllm:num_requests_running"
    REQUESTS_WAITING = "vllm:num_requests_waiting"
    GENERATION_TOKENS = "vllm:generation_tokens_total"
    PROMPT_TOKENS = "vllm:prompt_tokens_total"
    TTFT = "vllm:time_to_first_token_seconds"
    TPOT = "vllm:time_per_output_token_seconds"
    E2E_LATENCY = "vllm:e2e_request_latency_seconds"
    NUM_DRAFTS = "vllm:spec_decode_num_drafts_total"
    NUM_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
    NUM_ACCEPTED_TOKENS = "vllm:spec_decode_num_accepted_tokens_total"
    ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
    DRAFT_TOKENS_PER_POS = "specfleet_spec_decode_num_draft_tokens_per_pos_total"
    SPECULATION_ENABLED = "specfleet_speculation_enabled"
    SPECULATION_K_MAX = "specfleet_speculation_k_max"
    DECODE_BATCH_SIZE = "specfleet_decode_batch_size"
    STEP_K = "specfleet_step_k"
    FORWARD_DURATION = "specfleet_forward_duration_seconds"
    # Tokens in those passes, same labels: a bucket's mean pass size (it spans (n/2, n]).
    FORWARD_TOKENS = "specfleet_forward_tokens_total"
    FORWARD_ROWS = "specfleet_forward_rows_total"
    CALIBRATED_FORWARD = "specfleet_calibrated_forward_seconds"
    # Whole decode-step wall time (step less its prefill) by K and power-of-two decode batch.
    STEP_DURATION = "specfleet_step_duration_seconds"
    # The forward-pass seconds inside those steps, same labels: the rest is per-step overhead.
    STEP_FORWARD_SECONDS = "specfleet_step_forward_seconds_total"

    MODEL_NAME_LABEL = "model_name"
    POSITION_LABEL = "position"
    MODEL_LABEL = "model"  # "target" | "draft"
    TOKENS_LABEL = "tokens"  # power-of-two bucket of tokens in the pass, as a string
    SHAPE_LABEL = "shape"  # "decode" (1 token per row) | "verify" (several, in a decode step) | "prefill"
    K_LABEL = "k"  # draft length of the step, as a string
    BATCH_LABEL = "batch"  # power-of-two bucket of the step's decode batch, as a string


def token_bucket(n_tokens: int) -> int:
    """The power-of-two bucket (the smallest power of two >= n) a forward pass is filed under."""
    if n_tokens < 1:
        raise ValueError("a forward pass has at least one token")
    return 1 << (n_tokens - 1).bit_length()
