"""Properties of the multi-task loss on random tensors."""

import torch
import torch.nn.functional as F

from tinyllm.loss import IGNORE, multitask_loss


def make(n=6, t=5, v=11, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, v, generator=g)
    labels = torch.randint(0, v, (n, t), generator=g)
    labels[:, :2] = IGNORE  # prompt positions
    task = torch.arange(n) % k
    return logits, labels, task


def test_alpha_zero_is_answer_loss_alone():
    logits, labels, task = make()
    total, per = multitask_loss(logits, labels, task, torch.tensor([1.0, 0.0, 0.0]))
    ans = task == 0
    ref = F.cross_entropy(logits[ans].reshape(-1, 11), labels[ans].reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(total, ref) and torch.allclose(per[0], ref)


def test_each_term_is_mean_over_its_tasks_tokens_and_weighted_sum():
    logits, labels, task = make()
    w = torch.tensor([1.0, 0.5, 2.0])
    total, per = multitask_loss(logits, labels, task, w)
    refs = [F.cross_entropy(logits[task == k].reshape(-1, 11), labels[task == k].reshape(-1), ignore_index=IGNORE)
            for k in range(3)]
    assert torch.allclose(per, torch.stack(refs))
    assert torch.allclose(total, (w * torch.stack(refs)).sum())


def test_teacher_order_does_not_matter():
    logits, labels, task = make()
    w = torch.tensor([1.0, 0.3, 3.0])
    total, _ = multitask_loss(logits, labels, task, w)
    swap = torch.tensor([0, 2, 1])[task]  # teachers 1 and 2 exchange indices, alphas follow
    total2, _ = multitask_loss(logits, labels, swap, w[[0, 2, 1]])
    assert torch.allclose(total, total2)


def test_ignored_positions_contribute_nothing():
    logits, labels, task = make()
    w = torch.tensor([1.0, 1.0, 1.0])
    total, _ = multitask_loss(logits, labels, task, w)
    noisy = logits.clone()
    noisy[:, :2] += 100 * torch.randn_like(noisy[:, :2])  # only IGNORE positions change
    total2, _ = multitask_loss(noisy, labels, task, w)
    assert torch.allclose(total, total2)
    noisy.requires_grad_(True)
    multitask_loss(noisy, labels, task, w)[0].backward()
    assert noisy.grad[:, :2].abs().sum() == 0 and noisy.grad[:, 2:].abs().sum() > 0


def test_task_without_tokens_is_zero_not_nan():
    logits, labels, task = make(k=2)  # task 2 (a teacher with no rationale here) absent
    total, per = multitask_loss(logits, labels, task, torch.tensor([1.0, 1.0, 5.0]))
    assert per[2] == 0 and torch.isfinite(total)
