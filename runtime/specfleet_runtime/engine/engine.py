"""The engine: a step loop on a background thread over a continuously batched set of
sequences, with lossless speculative decoding whose K follows the schedule per step.

One step: admit waiting requests (batched prefill), then one decode pass over every
sequence that was already decoding: plain, or speculative with K from the schedule for
that decode batch size. Requests join and leave only between steps.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from specfleet.contract import MAX_K, SpeculationConfig, SpeculationUpdate

from ..calibration import calibrate as run_calibration
from ..kv_cache import SlotAllocator
from ..loader import count_tensors, load_model, read_config
from ..sampling import SamplingBatch, validate_params
from ..speculative import DraftVerifier, verify_draft
from ..tokenizer import Tokenizer
from .api import FinishReason, ForwardTiming, OutputCallback, RequestOutput, SamplingParams, StepObserver, StepReport
from .decode import DecodeInputs, plain_decode, sample_tokens, speculative_decode, uniforms_needed
from .runner import ModelRunner
from .sequence import Sequence

log = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 2048


class IncompatibleModelsError(ValueError):
    """Draft and target cannot be paired (their vocabularies differ)."""


class PromptTooLongError(ValueError):
    """The prompt leaves no room for a generated token within max_model_len."""


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: Path
    draft_dir: Path | None = None
    speculation: SpeculationConfig = Field(default_factory=lambda: SpeculationConfig(enabled=False))
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64", "bfloat16", "float16"] | None = None  # None: float32 cpu, bfloat16 cuda
    max_batch: int = Field(default=16, ge=1)
    max_model_len: int | None = Field(default=None, ge=2)  # None: min(2048, max_position_embeddings)
    max_prefill_tokens: int = Field(default=4096, ge=1)  # padded prompt tokens per step (one prompt may exceed)
    cuda_graphs: bool = True  # replay captured decode passes on CUDA (engine/cuda_graphs.py)
    compile_layers: bool = False  # torch.compile each decoder layer on CUDA (fuses the ops between matmuls)
    seed: int = 0

    @property
    def resolved_dtype(self) -> str:
        return self.dtype or ("bfloat16" if self.device == "cuda" else "float32")


def check_speculation(spec: SpeculationConfig, has_draft: bool) -> None:
    if spec.enabled and spec.method == "draft" and not has_draft:
        raise ValueError("method: 'draft' needs a draft model, and none is loaded (start with a draft model dir)")


class Engine:
    def __init__(
        self,
        cfg: EngineConfig,
        tokenizer: Tokenizer,
        target: ModelRunner,
        draft: ModelRunner | None,
        max_model_len: int,
        observer: StepObserver | None = None,
        verifier: DraftVerifier = verify_draft,
    ) -> None:
        check_speculation(cfg.speculation, draft is not None)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.model_name = Path(cfg.model_dir).name
        self.max_model_len = max_model_len
        self.max_batch = cfg.max_batch
        self._target = target
        self._draft = draft
        self._observer = observer
        self._verifier = verifier
        self._spec = cfg.speculation
        self._eos = tokenizer.eos_token_ids
        self._device = target.device
        self._generator = torch.Generator().manual_seed(cfg.seed)
        self._slots = SlotAllocator(cfg.max_batch)
        self._running: list[Sequence] = []
        self._waiting: deque[Sequence] = deque()
        self._inbox: list[Sequence] = []
        self._aborts: set[str] = set()
        self._wake = threading.Condition()
        self._step_lock = threading.Lock()  # steps and calibration share the models
        self._thread: threading.Thread | None = None
        self._stop = False

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        cfg: EngineConfig,
        observer: StepObserver | None = None,
        progress: Callable[[int, int], None] | None = None,
        verifier: DraftVerifier = verify_draft,
    ) -> "Engine":
        """Load the target (and draft) model. `verifier` replaces the acceptance rule for the
        draft method (tests use it to show a wrong rule is detected)."""
        check_speculation(cfg.speculation, cfg.draft_dir is not None)
        target_cfg = read_config(cfg.model_dir)
        if cfg.draft_dir is not None:
            draft_vocab = read_config(cfg.draft_dir)["vocab_size"]
            if draft_vocab != target_cfg["vocab_size"]:
                raise IncompatibleModelsError(
                    f"draft vocabulary ({draft_vocab} tokens, {cfg.draft_dir}) differs from the target's "
                    f"({target_cfg['vocab_size']} tokens, {cfg.model_dir})"
                )
        max_pos = target_cfg.get("max_position_embeddings", DEFAULT_MAX_MODEL_LEN)
        max_model_len = cfg.max_model_len or min(DEFAULT_MAX_MODEL_LEN, max_pos)
        if max_model_len > max_pos:
            raise ValueError(f"max_model_len={max_model_len} exceeds the model's max_position_embeddings={max_pos}")
        tokenizer = Tokenizer(cfg.model_dir)
        dirs = [cfg.model_dir] + ([cfg.draft_dir] if cfg.draft_dir is not None else [])
        total = sum(count_tensors(d) for d in dirs)
        done = 0

        def load(path: Path):
            nonlocal done
            offset = done

            def report(i: int, _n: int) -> None:
                if progress is not None:
                    progress(offset + i, total)

            model = load_model(path, dtype=cfg.resolved_dtype, device=cfg.device, progress=report)
            done = offset + count_tensors(path)
            return model

        # Room past max_model_len for K speculative positions, plus the scratch position.
        max_cache_len = max_model_len + MAX_K + 1
        def runner(name: Literal["target", "draft"], path: Path) -> ModelRunner:
            return ModelRunner(name, load(path), cfg.max_batch, max_cache_len, cfg.cuda_graphs, cfg.compile_layers)

        target = runner("target", cfg.model_dir)
        draft = runner("draft", cfg.draft_dir) if cfg.draft_dir is not None else None
        return cls(cfg, tokenizer, target, draft, max_model_len, observer, verifier)

    # ---- public API (thread-safe) ---------------------------------------------------

    @property
    def speculation(self) -> SpeculationConfig:
        return self._spec

    def update_speculation(self, update: SpeculationUpdate) -> SpeculationConfig:
        """Validate and apply; in force from the next step. Raises ValueError naming the field."""
        new = update.apply_to(self._spec)
        check_speculation(new, self._draft is not None)
        self._spec = new
        return new

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting) + len(self._inbox)

    def add_request(self, prompt_ids: list[int], params: SamplingParams, on_output: OutputCallback) -> str:
        validate_params(params)
        if not prompt_ids:
            raise ValueError("prompt must have at least one token")
        if len(prompt_ids) + 1 > self.max_model_len:
            raise PromptTooLongError(
                f"prompt has {len(prompt_ids)} tokens; with at least one generated token that exceeds "
                f"max_model_len={self.max_model_len}"
            )
        vocab = self._target.vocab_size
        bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"prompt token id {bad} is outside the vocabulary [0, {vocab})")
        seq = Sequence(
            request_id=f"req-{uuid.uuid4().hex}",
            tokens=list(prompt_ids),
            prompt_len=len(prompt_ids),
            params=params,
            on_output=on_output,
            stream=self.tokenizer.stream(prompt_ids, params.stop),
            generator=None if params.seed is None else torch.Generator().manual_seed(params.seed),
        )
        with self._wake:
            self._inbox.append(seq)
            self._wake.notify()
        return seq.request_id

    def abort(self, request_id: str) -> None:
        with self._wake:
            self._aborts.add(request_id)
            self._wake.notify()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="specfleet-engine", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def calibrate(self, max_seconds: float = 3.0) -> list[ForwardTiming]:
        runners = [self._target] + ([self._draft] if self._draft is not None else [])
        max_tokens = self.max_batch * (self._spec.k_max + 1)
        with self._step_lock:
            return run_calibration(runners, max_tokens, self.max_batch, max_seconds)

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[list[int]]:
        """Generated ids per prompt, all submitted at once so they batch. Drives the loop
        itself when the background thread is not running."""
        if not prompts:
            return []
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        outputs: list[list[int]] = [[] for _ in prompts]
        unfinished = [len(prompts)]  # only the engine thread changes it
        all_done = threading.Event()

        def collector(i: int) -> OutputCallback:
            def on_output(out: RequestOutput) -> None:
                outputs[i].extend(out.new_token_ids)
                if out.finished:
                    unfinished[0] -= 1
                    if unfinished[0] == 0:
                        all_done.set()

            return on_output

        for i, (prompt, p) in enumerate(zip(prompts, params_list)):
            self.add_request(prompt, p, collector(i))
        if self._thread is None:
            while not all_done.is_set():
                self.step()
        else:
            all_done.wait()
        return outputs

    # ---- the loop -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not (self._inbox or self._waiting or self._running or self._aborts):
                    self._wake.wait()
                if self._stop:
                    return
            try:
                self.step()
            except Exception:  # the loop outlives anything a step throws
                log.exception("engine step failed; aborting its sequences")
                for seq in [*self._running, *self._waiting]:
                    self._finish(seq, "abort")
                self._release_finished(include_waiting=True)

    def step(self) -> None:
        """One engine step (called by the loop thread, or by `generate` without it)."""
        with self._step_lock:
            started = time.perf_counter()
            self._take_inbox()
            spec = self._spec  # one config for the whole step, whatever a PUT does meanwhile
            decoding = sorted(self._running, key=lambda s: s.slot)  # slot order lets attention read cache views
            admitted = self._admit()
            report = StepReport(decode_batch=len(decoding), k=spec.k_for_batch(len(decoding)) if decoding else 0)
            prefill_s = 0.0
            if admitted:
                prefill_started = time.perf_counter()
                drafts_next = spec.method == "draft" and spec.k_for_batch(len(decoding) + len(admitted)) > 0
                self._guarded(admitted, lambda: self._prefill(admitted, drafts_next, report))
                prefill_s = time.perf_counter() - prefill_started
            prefill_timings = len(report.forward_timings)
            if decoding:
                self._guarded(decoding, lambda: self._decode(decoding, spec, report))
            self._running.extend(admitted)
            for seq in admitted + decoding:
                self._deliver(seq)
            self._release_finished()
            report.running, report.waiting = len(self._running), self.num_waiting
            if decoding:
                report.decode_seconds = time.perf_counter() - started - prefill_s
                report.decode_forward_seconds = sum(t.seconds for t in report.forward_timings[prefill_timings:])
        if self._observer is not None:
            try:
                self._observer.on_step(report)
            except Exception:
                log.exception("step observer failed")

    def _guarded(self, seqs: list[Sequence], work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            log.exception("forward pass failed; aborting %d sequences", len(seqs))
            for seq in seqs:
                self._finish(seq, "abort")

    def _take_inbox(self) -> None:
        with self._wake:
            self._waiting.extend(self._inbox)
            self._inbox.clear()
            aborts, self._aborts = self._aborts, set()
        if aborts:
            for seq in [*self._running, *self._waiting]:
                if seq.request_id in aborts:
                    self._finish(seq, "abort")
            self._release_finished(include_waiting=True)

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        width = 0
        while self._waiting and self._slots.free:
            nxt = self._waiting[0]
            new_width = max(width, len(nxt.tokens))
            if admitted and (len(admitted) + 1) * new_width > self.cfg.max_prefill_tokens:
                break
            width = new_width
            seq = self._waiting.popleft()
            seq.slot = self._slots.take()
            admitted.append(seq)
        return admitted

    def _uniforms(self, seqs: list[Sequence], n: int) -> torch.Tensor:
        u = torch.rand(len(seqs), n, generator=self._generator)
        for i, seq in enumerate(seqs):
            if seq.generator is not None:
                u[i] = torch.rand(n, generator=seq.generator)
        return u.to(self._device)

    def _prefill(self, seqs: list[Sequence], with_draft: bool, report: StepReport) -> None:
        """`with_draft`: the batch these prompts join drafts. Where it does not, the draft's
        prefill waits for the first drafting step (`catch_up_draft`), if one comes at all."""
        rows = [s.tokens for s in seqs]
        slots = [s.slot for s in seqs]
        logits = self._target.extend(rows, [0] * len(seqs), slots, report.forward_timings)
        if with_draft and self._draft is not None:
            self._draft.extend(rows, [0] * len(seqs), slots, report.forward_timings)
            for seq in seqs:
                seq.draft_len = len(seq.tokens)
        batch = SamplingBatch.from_params([s.params for s in seqs], self._device)
        u = None if batch.all_greedy else self._uniforms(seqs, 1)[:, 0]
        tokens, _ = sample_tokens(logits, batch, u)
        report.prefill_tokens += sum(len(r) for r in rows)
        for seq, token in zip(seqs, tokens.tolist()):
            self._commit(seq, [token], report)

    def _decode(self, seqs: list[Sequence], spec: SpeculationConfig, report: StepReport) -> None:
        k = report.k
        batch = SamplingBatch.from_params([s.params for s in seqs], self._device)
        u = None if batch.all_greedy else self._uniforms(seqs, uniforms_needed(spec.method, k))
        inp = DecodeInputs.build(seqs, batch, u, self._device)
        if k == 0:
            new_tokens = plain_decode(self._target, inp, report.forward_timings)
        else:
            draft = self._draft if spec.method == "draft" else None
            outcome = speculative_decode(
                self._target, draft, k, inp, self._verifier, report.forward_timings, self.cfg.max_prefill_tokens
            )
            new_tokens = outcome.tokens
            report.num_drafts = sum(1 for n in outcome.num_proposed if n > 0)
            report.draft_tokens_per_pos = [sum(1 for n in outcome.num_proposed if n > i) for i in range(k)]
            report.accepted_per_pos = [sum(1 for a in outcome.accepted if a > i) for i in range(k)]
        for seq, toks in zip(seqs, new_tokens):
            self._commit(seq, toks, report)

    def _commit(self, seq: Sequence, tokens: list[int], report: StepReport) -> None:
        """Commit one sequence's new tokens; a failure here (detokenizing, stop rules)
        aborts that sequence alone."""
        try:
            report.generated_tokens += seq.commit(tokens, self._eos, self.max_model_len)
        except Exception:
            log.exception("committing tokens of %s failed; aborting it", seq.request_id)
            self._finish(seq, "abort")

    # ---- finishing ------------------------------------------------------------------

    @staticmethod
    def _finish(seq: Sequence, reason: FinishReason) -> None:
        if seq.finish_reason is None:
            seq.finish_reason = reason

    def _deliver(self, seq: Sequence) -> None:
        """Hand the sequence's pending event to its callback; a failing callback aborts
        only its own request."""
        out = seq.take_output()
        if out is None:
            return
        try:
            seq.on_output(out)
        except Exception:
            log.exception("output callback of %s failed; aborting it", seq.request_id)
            self._finish(seq, "abort")
            final = seq.take_output()
            if final is not None:
                try:
                    seq.on_output(final)
                except Exception:
                    log.exception("output callback of %s failed on abort too", seq.request_id)

    def _release_finished(self, include_waiting: bool = False) -> None:
        """Drop finished sequences (waiting ones finish only by abort) and free their slots."""
        for seq in self._running:
            if seq.finish_reason is not None:
                self._deliver(seq)
                self._slots.give(seq.slot)
                seq.slot = -1
        self._running = [s for s in self._running if s.finish_reason is None]
        if include_waiting:
            for seq in self._waiting:
                if seq.finish_reason is not None:
                    self._deliver(seq)
            self._waiting = deque(s for s in self._waiting if s.finish_reason is None)
