"""A-LoL's attention value head: fits a learnable target, ignores padding, keeps the best epoch."""

import copy

import pytest
import torch

from rlhf.algos.value_head import ValueHeadAttention, fit_value_head, predict

N, T, H, MAX_VALUE = 256, 6, 16, 2.0


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matmuls on a shared 2-core box: extra intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic():
    """Random prompts of 1..T tokens; target = max_value · σ(2 · mean over real tokens of feature 0).

    Uniform attention (a zero query projection), a value projection onto feature 0 and the final Linear
    represent it exactly, so the head can learn it.
    """
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, T, H, generator=g)  # (N, T, H)
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (N, T)
    feature = (hidden[..., 0] * mask).sum(1) / mask.sum(1)  # (N,)
    return hidden, mask, MAX_VALUE * torch.sigmoid(2 * feature)


def make_head(seed: int = 0) -> ValueHeadAttention:
    torch.manual_seed(seed)
    return ValueHeadAttention(H, max_value=MAX_VALUE)


def test_fits_a_learnable_target():
    hidden, mask, targets = synthetic()
    head = make_head()
    before = ((predict(head, hidden, mask, 64) - targets) ** 2).mean().item()
    history = fit_value_head(head, hidden, mask, targets, epochs=25, lr=2e-2, batch_size=64,
                             generator=torch.Generator().manual_seed(1))
    assert len(history) == 25
    pred = predict(head, hidden, mask, 64)
    mse = ((pred - targets) ** 2).mean().item()
    # The target's variance is ≈ 0.21; an untrained head is far off, the fitted one within a few hundredths.
    assert before > 0.1
    assert mse < 0.02
    assert history[-1] < history[0] / 4
    assert 0.0 <= pred.min().item() and pred.max().item() <= MAX_VALUE
    assert head.training is True  # fit and predict (eval mode inside) restore the mode they found


def test_output_is_bounded_by_max_value():
    head = make_head().eval()
    huge = torch.full((3, 4, H), 1e4) * torch.tensor([1.0, -1.0, 0.0])[:, None, None]
    values = head(huge, torch.ones(3, 4, dtype=torch.bool))
    assert values.shape == (3,)
    assert bool(((values >= 0) & (values <= MAX_VALUE)).all())


def test_padding_does_not_change_the_value():
    hidden, mask, _ = synthetic()
    head = make_head()
    expected = predict(head, hidden[:32], mask[:32], 8)
    changed = hidden[:32].clone()
    padding = ~mask[:32]
    assert padding.any()
    changed[padding] = torch.randn(int(padding.sum()), H) * 100  # arbitrary values at padding positions
    torch.testing.assert_close(predict(head, changed, mask[:32], 8), expected)
    changed[padding] = float("nan")  # even NaN there stays out
    torch.testing.assert_close(predict(head, changed, mask[:32], 8), expected)
    # Batching does not matter either: one batch of 32 or batches of 8 with different padding lengths.
    torch.testing.assert_close(predict(head, hidden[:32], mask[:32], 32), expected)


def test_best_epoch_weights_are_restored():
    # With a far too large learning rate (0.5) the epoch MSE is lowest after the first epoch and worse
    # after every later one, so the best epoch is not the last. Fitting an identical copy with identical
    # seeds for exactly that many epochs must end on the weights that the longer fit restored.
    hidden, mask, targets = synthetic()
    head = make_head()
    twin = copy.deepcopy(head)
    torch.manual_seed(1)  # dropout
    history = fit_value_head(head, hidden, mask, targets, epochs=4, lr=0.5, batch_size=64,
                             generator=torch.Generator().manual_seed(2))
    best = min(range(len(history)), key=history.__getitem__)
    assert best < len(history) - 1, f"precondition: the best epoch should not be the last, got {history}"
    torch.manual_seed(1)
    prefix = fit_value_head(twin, hidden, mask, targets, epochs=best + 1, lr=0.5, batch_size=64,
                            generator=torch.Generator().manual_seed(2))
    assert prefix == history[: best + 1]
    for name, value in head.state_dict().items():
        torch.testing.assert_close(value, twin.state_dict()[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("hidden_size, heads", [(16, 8), (12, 6), (9, 3), (10, 5), (7, 7), (1, 1)])
def test_num_heads_is_the_largest_divisor_up_to_8(hidden_size, heads):
    head = ValueHeadAttention(hidden_size)
    assert head.num_heads == heads
    values = head(torch.randn(2, 3, hidden_size), torch.ones(2, 3, dtype=torch.bool))
    assert values.shape == (2,)


def test_invalid_inputs_raise():
    head = make_head()
    with pytest.raises(ValueError, match="at least one unmasked token"):
        head(torch.randn(2, 3, H), torch.tensor([[True, True, False], [False, False, False]]))
    with pytest.raises(ValueError, match="must match"):
        head(torch.randn(2, 3, H), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_value"):
        ValueHeadAttention(H, max_value=0.0)
    hidden, mask, targets = synthetic()
    with pytest.raises(ValueError, match="targets"):
        fit_value_head(head, hidden, mask, targets[:-1], epochs=1, lr=1e-3, batch_size=8)
