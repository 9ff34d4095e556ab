"""Time- or step-bounded training loops: the target on next-token cross-entropy, the draft
distilled from the target's full next-token distributions (forward KL)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Budget:
    """Stop after `seconds` of training, or after exactly `steps` when given (reproduction)."""

    seconds: float
    steps: int | None = None

    def progress(self, step: int, elapsed: float) -> float:
        return step / self.steps if self.steps else elapsed / self.seconds


@dataclass(frozen=True)
class Optim:
    peak_lr: float
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0

    def lr(self, step: int, progress: float) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.peak_lr * (self.final_lr_fraction + (1 - self.final_lr_fraction) * cosine)


@dataclass
class TrainLog:
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


class WindowSampler:
    """Random fixed-length windows of a token stream, from a seeded generator."""

    def __init__(self, stream: Tensor, batch: int, seq_len: int, seed: int) -> None:
        if stream.numel() <= seq_len + 1:
            raise ValueError(f"token stream of {stream.numel()} tokens is shorter than one window ({seq_len + 1})")
        self.stream, self.batch, self.seq_len = stream, batch, seq_len
        self.gen = torch.Generator(device=stream.device).manual_seed(seed)
        self.offsets = torch.arange(seq_len + 1, device=stream.device)

    def __call__(self) -> tuple[Tensor, Tensor]:
        high = self.stream.numel() - self.seq_len - 1
        starts = torch.randint(0, high, (self.batch, 1), generator=self.gen, device=self.stream.device)
        w = self.stream[starts + self.offsets].long()
        return w[:, :-1], w[:, 1:]


def _optimizer(model: nn.Module, opt: Optim, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=opt.peak_lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def _autocast(device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _loop(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]],
    sampler: WindowSampler,
    budget: Budget,
    opt: Optim,
    log_every: int,
    name: str,
) -> TrainLog:
    device = next(model.parameters()).device
    optimizer = _optimizer(model, opt, device)
    log = TrainLog()
    model.train()
    start = time.perf_counter()
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        progress = budget.progress(step, elapsed)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = opt.lr(step, progress)
        x, y = sampler()
        with _autocast(device):
            loss, extra = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimizer.step()
        step += 1
        log.tokens += x.numel()
        if step % log_every == 0 or step == 1:
            row = {"step": step, "seconds": round(time.perf_counter() - start, 2), "loss": loss.item()}
            row |= {k: v.item() for k, v in extra.items()}
            row["lr"] = optimizer.param_groups[0]["lr"]
            log.history.append(row)
            print(f"[{name}] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    log.steps, log.seconds = step, time.perf_counter() - start
    final = {"step": step, "seconds": round(log.seconds, 2), "loss": loss.item()} | {k: v.item() for k, v in extra.items()}
    log.history.append(final)
    model.eval()
    return log


def train_target(model: nn.Module, sampler: WindowSampler, budget: Budget, opt: Optim, log_every: int = 100) -> TrainLog:
    def loss_fn(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = model(input_ids=x).logits.float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1)), {}

    return _loop(model, loss_fn, sampler, budget, opt, log_every, "target")


def distill_draft(
    draft: nn.Module, target: nn.Module, sampler: WindowSampler, budget: Budget, opt: Optim, log_every: int = 100
) -> TrainLog:
    """loss = KL(p_target || q_draft) per position; what decides acceptance is how often the
    draft's argmax equals the target's, and matching the whole distribution gets there
    faster than the one-hot labels would. The CE on the real next token is logged."""
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)

    def loss_fn(x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            log_p = F.log_softmax(target(input_ids=x).logits.float(), dim=-1)
        log_q = F.log_softmax(draft(input_ids=x).logits.float(), dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        with torch.no_grad():
            ce = F.nll_loss(log_q.view(-1, log_q.size(-1)), y.reshape(-1))
            agree = (log_q.argmax(-1) == log_p.argmax(-1)).float().mean()
        return kl, {"ce": ce, "argmax_agree": agree}

    return _loop(draft, loss_fn, sampler, budget, opt, log_every, "draft")


@torch.no_grad()
def mean_cross_entropy(model: nn.Module, stream: Tensor, seq_len: int, max_windows: int, batch: int) -> float:
    """Mean next-token CE over consecutive non-overlapping windows of a held-out stream."""
    n = min(max_windows, (stream.numel() - 1) // seq_len)
    if n < 1:
        raise ValueError("held-out stream is shorter than one window")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for lo in range(0, n, batch):
        idx = torch.arange(lo, min(n, lo + batch), device=stream.device)[:, None] * seq_len
        w = stream[idx + torch.arange(seq_len + 1, device=stream.device)].long().to(device)
        logits = model(input_ids=w[:, :-1]).logits.float()
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    return total / count
