"""A-LoL's leftover filtering and priority sampling against hand-computed numbers."""

import pytest
import torch

from rlhf.algos.alol_sampling import draw, positive_fraction, sample_weights, scaled_steps

# Advantages of four examples: two positive, one negative, one exactly zero.
VALUES = torch.tensor([0.5, -0.2, 0.0, 1.5])


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("good_priority", [0.5, 0.0, 0.0, 1.5]),  # max(v, 0)
        ("all_priority", [0.5, 0.0, 0.0, 1.5]),  # same rule; the caller concatenates good and bad values
        ("good_random", [1.0, 0.0, 0.0, 1.0]),  # uniform over v > 0: the zero advantage is dropped too
        ("uniform", [1.0, 1.0, 1.0, 1.0]),
        (None, [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_sample_weights(strategy, expected):
    torch.testing.assert_close(sample_weights(VALUES, strategy), torch.tensor(expected))


def test_sample_weights_rejects_unknown_strategy_and_bad_shape():
    with pytest.raises(ValueError, match="sampling_strategy"):
        sample_weights(VALUES, "bad_priority")
    with pytest.raises(ValueError, match="1-D"):
        sample_weights(VALUES[None], "good_priority")


def test_integer_values_become_float_weights():
    assert sample_weights(torch.tensor([2, -1]), "good_priority").tolist() == [2.0, 0.0]


def test_positive_fraction_and_scaled_steps():
    # 2 of 4 advantages are > 0 (0.0 does not count): 1/2; 9000 steps → 4500.
    assert positive_fraction(VALUES) == 0.5
    assert scaled_steps(9000, VALUES) == 4500
    # int(10 · 1/3) = int(3.33…) = 3
    assert scaled_steps(10, torch.tensor([1.0, 0.0, -1.0])) == 3
    # int(3 · 1/4) = 0, raised to the minimum of 1
    assert scaled_steps(3, torch.tensor([1.0, -1.0, -1.0, -1.0])) == 1
    # No positive advantage at all still gives 1 step; `draw` is what refuses to sample then.
    assert scaled_steps(100, torch.tensor([-1.0, 0.0])) == 1
    with pytest.raises(ValueError):
        positive_fraction(torch.tensor([]))
    with pytest.raises(ValueError):
        scaled_steps(0, VALUES)


def test_draw_frequencies_and_zero_weights():
    # good_priority weights (0.5, 0, 0, 1.5): probabilities (0.25, 0, 0, 0.75). With 40 000 draws the
    # standard error of a frequency is √(0.25·0.75/40 000) ≈ 0.0022, so ±0.01 is ~4.6 standard errors.
    weights = sample_weights(VALUES, "good_priority")
    idx = draw(weights, 40_000, torch.Generator().manual_seed(0), "good_priority")
    assert idx.dtype == torch.long and idx.shape == (40_000,)
    freq = torch.bincount(idx, minlength=4).double() / 40_000
    assert freq[1].item() == 0.0 and freq[2].item() == 0.0
    assert freq[0].item() == pytest.approx(0.25, abs=0.01)
    assert freq[3].item() == pytest.approx(0.75, abs=0.01)


def test_draw_is_with_replacement_and_reproducible():
    # 10 draws from one positive weight: necessarily the same index 10 times (with replacement).
    assert draw(torch.tensor([0.0, 2.0]), 10, torch.Generator().manual_seed(0)).tolist() == [1] * 10
    weights = torch.tensor([1.0, 2.0, 3.0])
    first = draw(weights, 50, torch.Generator().manual_seed(7))
    again = draw(weights, 50, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert draw(weights, 0).shape == (0,)


def test_draw_errors():
    with pytest.raises(ValueError, match="'good_random'.*every weight is zero"):
        draw(sample_weights(torch.tensor([-1.0, 0.0]), "good_random"), 4, strategy="good_random")
    with pytest.raises(ValueError, match=">= 0"):
        draw(torch.tensor([1.0, -0.5]), 4)
    with pytest.raises(ValueError, match="finite"):
        draw(torch.tensor([1.0, float("nan")]), 4)
    with pytest.raises(ValueError, match="1-D"):
        draw(torch.ones(2, 2), 4)
