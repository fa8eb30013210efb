"""The TinyLLM multi-task objective (Tian et al., 2024, Sec. 3):

    L = w_A * L_A + sum_m alpha_m * L_{T^m}

``L_A`` is the token-level cross-entropy of the answer, ``L_{T^m}`` that of teacher m's
rationale (w_A = 1 in the paper). Each term is a mean over the target tokens of its own task
in the (global) batch, which is exactly what the authors' one-forward-per-task code computes.

Pure functions on tensors; the student's forward pass (``student/``) supplies the hidden
states of target positions, and ``token_nll`` projects them onto the vocabulary in chunks so a
[tokens x vocabulary] tensor never exists whole (49k x 4k tokens would be 0.8 GB in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def _chunk_nll(hidden, weight, bias, labels, softcap):
    logits = F.linear(hidden, weight, bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, labels, reduction="none")


def token_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    chunk: int = 1024,
    softcap: float | None = None,
) -> torch.Tensor:
    """Negative log-likelihood of each target token, (n,), from its hidden state (n, H).

    The vocabulary projection runs ``chunk`` tokens at a time under activation checkpointing:
    the backward pass recomputes each chunk's logits instead of keeping them, so peak memory
    holds one (chunk, V) block. ``chunk <= 0`` projects everything at once (the reference).
    """
    if chunk <= 0 or hidden.shape[0] <= chunk:
        return _chunk_nll(hidden, weight, bias, labels, softcap)
    if not torch.is_grad_enabled():  # evaluation (validation losses): chunks, nothing to recompute
        return torch.cat(
            [
                _chunk_nll(hidden[i : i + chunk], weight, bias, labels[i : i + chunk], softcap)
                for i in range(0, hidden.shape[0], chunk)
            ]
        )
    parts = [
        checkpoint(_chunk_nll, hidden[i : i + chunk], weight, bias, labels[i : i + chunk], softcap, use_reentrant=False)
        for i in range(0, hidden.shape[0], chunk)
    ]
    return torch.cat(parts)


def task_sums(nll: torch.Tensor, task: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task sums of token NLL and token counts, both (K,)."""
    sums = torch.zeros(k, dtype=nll.dtype, device=nll.device).index_add(0, task, nll)
    counts = torch.zeros(k, dtype=nll.dtype, device=nll.device).index_add(0, task, torch.ones_like(nll))
    return sums, counts


def multitask_loss(sums: torch.Tensor, weights: torch.Tensor, denominators: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * sums[k] / denominators[k]``; tasks with no tokens contribute 0.

    ``denominators`` are the token counts of each task over the whole optimizer step (all
    micro-batches and processes), so the micro-batch losses add up to the loss of the full
    batch exactly, however the batch was split.
    """
    return (weights.to(sums) * sums / denominators.to(sums).clamp_min(1)).sum()


def multitask_loss_tokens(
    logits: torch.Tensor, labels: torch.Tensor, task: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference form from full logits (n, V): (total, per-task mean losses (K,), detached)."""
    valid = labels != IGNORE
    nll = F.cross_entropy(logits.float()[valid], labels[valid], reduction="none")
    sums, counts = task_sums(nll, task[valid], weights.shape[0])
    return multitask_loss(sums, weights, counts), (sums / counts.clamp_min(1)).detach()
