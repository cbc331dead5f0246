"""SFT loss against hand-derived numbers."""

import math

import pytest
import torch

from rlhf.algos.sft import SFT

# Two sequences of three target tokens; the mask marks the assistant tokens.
LOGPROBS = [[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]]
MASK = [[0, 1, 1], [1, 0, 0]]


def test_token_mean_nll_by_hand():
    # Masked-in log-probs: -2, -3 (row 0) and -4 (row 1); 3 tokens.
    # loss = -(-2 - 3 - 4) / 3 = 9 / 3 = 3.0
    # (A mean of per-sequence means would be (2.5 + 4) / 2 = 3.25: the loss is per token, not per sequence.)
    loss, metrics = SFT().loss(torch.tensor(LOGPROBS), torch.tensor(MASK, dtype=torch.bool))
    assert loss.item() == pytest.approx(3.0, abs=1e-12)
    assert metrics["loss/nll"].item() == pytest.approx(3.0, abs=1e-12)
    assert metrics["tokens"].item() == 3


def test_float_mask_equals_bool_mask():
    logprobs = torch.tensor(LOGPROBS)
    loss_bool, _ = SFT().loss(logprobs, torch.tensor(MASK, dtype=torch.bool))
    loss_float, _ = SFT().loss(logprobs, torch.tensor(MASK, dtype=torch.float32))
    assert loss_float.item() == loss_bool.item() == pytest.approx(3.0)


def test_masked_out_tokens_contribute_nothing():
    mask = torch.tensor(MASK, dtype=torch.bool)
    changed = torch.tensor(LOGPROBS)
    # Positions (0,0), (1,1), (1,2) are masked out: arbitrary values, even -inf and NaN, must not matter.
    changed[0, 0], changed[1, 1], changed[1, 2] = -1000.0, -math.inf, math.nan
    loss, _ = SFT().loss(changed, mask)
    assert loss.item() == pytest.approx(3.0, abs=1e-12)


def test_gradient_is_minus_mask_over_token_count():
    # dL/dlogprobs_bt = -m_bt / Σm = -m / 3
    logprobs = torch.tensor(LOGPROBS, requires_grad=True)
    mask = torch.tensor(MASK, dtype=torch.bool)
    loss, metrics = SFT().loss(logprobs, mask)
    loss.backward()
    expected = -torch.tensor(MASK, dtype=torch.float32) / 3
    torch.testing.assert_close(logprobs.grad, expected)
    assert not any(m.requires_grad for m in metrics.values())


def test_empty_mask_raises():
    with pytest.raises(ValueError, match="no assistant tokens"):
        SFT().loss(torch.tensor(LOGPROBS), torch.zeros(2, 3, dtype=torch.bool))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must match"):
        SFT().loss(torch.tensor(LOGPROBS), torch.ones(2, 2, dtype=torch.bool))


def test_class_attributes():
    assert SFT.batch_kind == "sequence"
    assert SFT().needs_reference is False
