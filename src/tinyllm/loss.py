"""The TinyLLM multi-task objective (Tian et al., 2024, Sec. 3):

    L = w_A * L_A + sum_m alpha_m * L_{T^m}

``L_A`` is the token-level cross-entropy of the answer, ``L_{T^m}`` that of teacher m's
rationale (w_A = 1 in the paper). Each term is a mean over the target tokens of its own task
in the batch, which is exactly what the authors' one-forward-per-task code computes, so the
fused single-forward path here gives the same value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def multitask_loss_tokens(
    logits: torch.Tensor, labels: torch.Tensor, task: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss from target tokens only.

    Args:
        logits:  (n, V) scores of n target tokens.
        labels:  (n,) their gold token ids (``IGNORE`` entries contribute nothing).
        task:    (n,) task index of each token: 0 = answer, m = teacher m (1..K-1).
        weights: (K,) weight per task: ``[w_A, alpha_1, ..., alpha_{K-1}]``.
    Returns:
        total: scalar ``sum_k weights[k] * L_k``.
        per_task: (K,) ``L_k`` (0 for a task without tokens in the batch), detached.
    """
    k = weights.shape[0]
    valid = labels != IGNORE
    tok = F.cross_entropy(logits.float(), labels.clamp_min(0), reduction="none") * valid
    sums = torch.zeros(k, dtype=tok.dtype, device=tok.device).index_add(0, task, tok)
    counts = torch.zeros(k, dtype=tok.dtype, device=tok.device).index_add(0, task, valid.to(tok.dtype))
    per_task = sums / counts.clamp_min(1)
    total = (weights.to(per_task) * per_task).sum()
    return total, per_task.detach()


def multitask_loss(
    logits: torch.Tensor, labels: torch.Tensor, task_ids: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded form: ``logits`` (N, T, V) already aligned with ``labels`` (N, T) — position t
    predicts ``labels[:, t]`` — and ``task_ids`` (N,) one task per sequence."""
    n, t, v = logits.shape
    mask = labels != IGNORE
    task = task_ids[:, None].expand(n, t)[mask]
    return multitask_loss_tokens(logits[mask], labels[mask], task, weights)
