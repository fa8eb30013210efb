"""Properties of the multi-task loss on random tensors."""

import torch
import torch.nn.functional as F

from tinyllm.loss import IGNORE, multitask_loss, multitask_loss_tokens, task_sums, token_nll


def make(n=30, v=11, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g)
    labels = torch.randint(0, v, (n,), generator=g)
    labels[:4] = IGNORE  # prompt positions
    task = torch.arange(n) % k
    return logits, labels, task


def test_alpha_zero_is_answer_loss_alone():
    logits, labels, task = make()
    total, per = multitask_loss_tokens(logits, labels, task, torch.tensor([1.0, 0.0, 0.0]))
    ans = (task == 0) & (labels != IGNORE)
    ref = F.cross_entropy(logits[ans], labels[ans])
    assert torch.allclose(total, ref) and torch.allclose(per[0], ref)


def test_each_term_is_mean_over_its_tasks_tokens_and_weighted_sum():
    logits, labels, task = make()
    w = torch.tensor([1.0, 0.5, 2.0])
    total, per = multitask_loss_tokens(logits, labels, task, w)
    refs = [F.cross_entropy(logits[task == k], labels[task == k], ignore_index=IGNORE) for k in range(3)]
    assert torch.allclose(per, torch.stack(refs))
    assert torch.allclose(total, (w * torch.stack(refs)).sum())


def test_teacher_order_does_not_matter():
    logits, labels, task = make()
    w = torch.tensor([1.0, 0.3, 3.0])
    total, _ = multitask_loss_tokens(logits, labels, task, w)
    swap = torch.tensor([0, 2, 1])[task]  # teachers 1 and 2 exchange indices, alphas follow
    total2, _ = multitask_loss_tokens(logits, labels, swap, w[[0, 2, 1]])
    assert torch.allclose(total, total2)


def test_ignored_positions_contribute_nothing():
    logits, labels, task = make()
    w = torch.tensor([1.0, 1.0, 1.0])
    noisy = logits.clone()
    noisy[:4] += 100 * torch.randn_like(noisy[:4])  # only IGNORE positions change
    assert torch.allclose(
        multitask_loss_tokens(logits, labels, task, w)[0], multitask_loss_tokens(noisy, labels, task, w)[0]
    )


def test_task_without_tokens_contributes_zero_not_nan():
    logits, labels, task = make(k=2)  # task 2 (a teacher with no rationale here) absent
    total, per = multitask_loss_tokens(logits, labels, task, torch.tensor([1.0, 1.0, 5.0]))
    assert per[2] == 0 and torch.isfinite(total)


def test_chunked_token_nll_equals_one_projection_with_gradients():
    # guards: the chunked, checkpointed vocabulary projection changing the loss or its gradients
    g = torch.Generator().manual_seed(1)
    h = torch.randn(37, 8, generator=g, requires_grad=True)
    w = torch.randn(50, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 50, (37,), generator=g)
    for chunk, cap in ((0, None), (5, None), (5, 3.0)):
        nll = token_nll(h, w, None, y, chunk=chunk, softcap=cap)
        logits = h @ w.T
        if cap:
            logits = torch.tanh(logits / cap) * cap
        ref = F.cross_entropy(logits, y, reduction="none")
        assert torch.allclose(nll, ref, atol=1e-6)
        gh, gw = torch.autograd.grad(nll.sum(), (h, w))
        rh, rw = torch.autograd.grad(ref.sum(), (h, w))
        assert torch.allclose(gh, rh, atol=1e-5) and torch.allclose(gw, rw, atol=1e-5)


def test_step_denominators_make_micro_batches_add_up_to_the_full_batch():
    # guards: grad accumulation that averages per micro-batch means (unequal token counts)
    nll = torch.rand(20)
    task = torch.tensor([0] * 3 + [1] * 9 + [0] * 5 + [1] * 3)
    w = torch.tensor([1.0, 0.7])
    s_all, c_all = task_sums(nll, task, 2)
    full = multitask_loss(s_all, w, c_all)
    parts = [task_sums(nll[a:b], task[a:b], 2)[0] for a, b in ((0, 12), (12, 20))]
    assert torch.allclose(sum(multitask_loss(p, w, c_all) for p in parts), full)


def test_chunked_token_nll_without_gradients_equals_one_projection():
    # guards: evaluation (validation losses) projecting every target token at once (a 2 GB spike)
    g = torch.Generator().manual_seed(2)
    h, w = torch.randn(23, 8, generator=g), torch.randn(50, 8, generator=g)
    y = torch.randint(0, 50, (23,), generator=g)
    with torch.no_grad():
        assert torch.allclose(
            token_nll(h, w, None, y, chunk=4), F.cross_entropy(h @ w.T, y, reduction="none"), atol=1e-6
        )
