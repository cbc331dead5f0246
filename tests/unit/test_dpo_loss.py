"""DPO / IPO / hinge losses against hand-derived numbers (β = 0.1 throughout unless stated)."""

import dataclasses

import pytest
import torch

from rlhf.algos.dpo import DPO


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# One pair: policy chosen -1, rejected -3; reference chosen -2, rejected -3.
# z = (−1 − (−2)) − (−3 − (−3)) = 1
ONE = dict(
    chosen_logps=t(-1.0),
    rejected_logps=t(-3.0),
    ref_chosen_logps=t(-2.0),
    ref_rejected_logps=t(-3.0),
    chosen_lengths=t(1.0),
    rejected_lengths=t(1.0),
)
# Two pairs: the first as above (z = 1); the second (−2 − (−4)) − (−5 − (−4)) = 2 − (−1) = 3.
TWO = dict(
    chosen_logps=t(-1.0, -2.0),
    rejected_logps=t(-3.0, -5.0),
    ref_chosen_logps=t(-2.0, -4.0),
    ref_rejected_logps=t(-3.0, -4.0),
    chosen_lengths=t(1.0, 1.0),
    rejected_lengths=t(1.0, 1.0),
)
# A tie: both log-ratios are 0.5, z = 0.
TIE = dict(
    chosen_logps=t(-1.5),
    rejected_logps=t(-2.5),
    ref_chosen_logps=t(-2.0),
    ref_rejected_logps=t(-3.0),
    chosen_lengths=t(1.0),
    rejected_lengths=t(1.0),
)


@pytest.mark.parametrize(
    "algo, expected",
    [
        # sigmoid: −log σ(0.1·1) = log(1 + e^−0.1) = 0.6443966600735709
        (DPO(), 0.6443966600735709),
        # cDPO, ε = 0.1: 0.9·log(1 + e^−0.1) + 0.1·log(1 + e^0.1)
        #   and log(1 + e^0.1) = 0.1 + log(1 + e^−0.1), so = 0.6443966600735709 + 0.1·0.1 = 0.6543966600735709
        (DPO(label_smoothing=0.1), 0.6543966600735709),
        # ipo: (1 − 1/(2·0.1))² = (1 − 5)² = 16
        (DPO(loss_type="ipo"), 16.0),
        # hinge: max(0, 1 − 0.1·1) = 0.9
        (DPO(loss_type="hinge"), 0.9),
    ],
)
def test_single_pair_by_hand(algo, expected):
    loss, metrics = algo.loss(**ONE)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["loss/dpo"].item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "algo, expected",
    [
        # sigmoid: −log σ(0) = log 2, whatever ε: (1 − ε)·log 2 + ε·log 2 = log 2
        (DPO(), 0.6931471805599453),
        (DPO(label_smoothing=0.3), 0.6931471805599453),
        # ipo: (0 − 5)² = 25
        (DPO(loss_type="ipo"), 25.0),
        # hinge: max(0, 1 − 0) = 1
        (DPO(loss_type="hinge"), 1.0),
    ],
)
def test_tie(algo, expected):
    loss, metrics = algo.loss(**TIE)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # Rewards 0.1·0.5 = 0.05 both: margin 0, and a tie is not counted as accurate (strict >).
    assert metrics["rewards/margin"].item() == pytest.approx(0.0, abs=1e-12)
    assert metrics["rewards/accuracy"].item() == 0.0


def test_hinge_clamps_at_zero():
    # z = 12 (chosen log-ratio 10, rejected −2): max(0, 1 − 1.2) = 0, and no gradient flows.
    chosen = t(0.0).requires_grad_()
    loss, _ = DPO(loss_type="hinge").loss(chosen, t(-2.0), t(-10.0), t(0.0), t(1.0), t(1.0))
    loss.backward()
    assert loss.item() == 0.0
    assert chosen.grad.item() == 0.0


def test_reduction_sum_vs_mean():
    # hinge on z = 1, 3: losses 0.9 and 0.7 → sum 1.6, mean 0.8
    loss_sum, _ = DPO(loss_type="hinge", reduction="sum").loss(**TWO)
    loss_mean, _ = DPO(loss_type="hinge").loss(**TWO)
    assert loss_sum.item() == pytest.approx(1.6, abs=1e-12)
    assert loss_mean.item() == pytest.approx(0.8, abs=1e-12)
    # sigmoid on z = 1, 3: log(1 + e^−0.1) + log(1 + e^−0.3) = 0.6443966600735709 + 0.5543552444685271
    loss_sum, _ = DPO(reduction="sum").loss(**TWO)
    assert loss_sum.item() == pytest.approx(1.198751904542098, abs=1e-12)


def test_reward_metrics_by_hand():
    # Chosen rewards 0.1·(1, 2) → mean 0.15; rejected 0.1·(0, −1) → mean −0.05; margin 0.2; both accurate.
    # logps/*: means of the policy log-probs: (−1 − 2)/2 = −1.5 and (−3 − 5)/2 = −4.
    _, m = DPO().loss(**TWO)
    assert m["rewards/chosen"].item() == pytest.approx(0.15, abs=1e-12)
    assert m["rewards/rejected"].item() == pytest.approx(-0.05, abs=1e-12)
    assert m["rewards/margin"].item() == pytest.approx(0.2, abs=1e-12)
    assert m["rewards/accuracy"].item() == 1.0
    assert m["logps/chosen"].item() == pytest.approx(-1.5, abs=1e-12)
    assert m["logps/rejected"].item() == pytest.approx(-4.0, abs=1e-12)


def test_accuracy_counts_only_strict_wins():
    # Pair 0 as ONE (chosen reward 0.1 > 0); pair 1 swapped (chosen −0.1 < rejected 0.1): accuracy 1/2.
    batch = dict(
        TWO, chosen_logps=t(-1.0, -5.0), ref_chosen_logps=t(-2.0, -4.0), ref_rejected_logps=t(-3.0, -6.0)
    )
    _, m = DPO().loss(**batch)
    assert m["rewards/accuracy"].item() == pytest.approx(0.5)


def test_reference_free():
    # r = 0: z = −1 − (−3) = 2; −log σ(0.2) = log(1 + e^−0.2) = 0.5981388693815918
    # Rewards are β·p: chosen −0.1, rejected −0.3.
    algo = DPO(reference_free=True)
    assert algo.needs_reference is False
    loss, m = algo.loss(t(-1.0), t(-3.0), None, None, t(1.0), t(1.0))
    assert loss.item() == pytest.approx(0.5981388693815918, abs=1e-12)
    assert m["rewards/chosen"].item() == pytest.approx(-0.1, abs=1e-12)
    assert m["rewards/rejected"].item() == pytest.approx(-0.3, abs=1e-12)
    # A reference passed anyway is ignored, in the loss and the rewards.
    loss_with_ref, m_with_ref = algo.loss(**ONE)
    assert loss_with_ref.item() == loss.item()
    assert m_with_ref["rewards/chosen"].item() == m["rewards/chosen"].item()


def test_length_normalize():
    # Chosen: 3 tokens, policy −6 → −2, reference −9 → −3, log-ratio +1.
    # Rejected: 4 tokens, policy −8 → −2, reference −4 → −1, log-ratio −1.
    # Normalised z = 1 − (−1) = 2 → ipo (2 − 5)² = 9. Raw sums: z = (−6 + 9) − (−8 + 4) = 7 → (7 − 5)² = 4.
    batch = dict(
        chosen_logps=t(-6.0),
        rejected_logps=t(-8.0),
        ref_chosen_logps=t(-9.0),
        ref_rejected_logps=t(-4.0),
        chosen_lengths=torch.tensor([3]),
        rejected_lengths=torch.tensor([4]),
    )
    loss, m = DPO(loss_type="ipo", length_normalize=True).loss(**batch)
    assert loss.item() == pytest.approx(9.0, abs=1e-12)
    # Rewards and logps are per token too: 0.1·1, 0.1·(−1); logps −2, −2.
    assert m["rewards/chosen"].item() == pytest.approx(0.1, abs=1e-12)
    assert m["rewards/rejected"].item() == pytest.approx(-0.1, abs=1e-12)
    assert m["logps/chosen"].item() == pytest.approx(-2.0, abs=1e-12)
    raw, _ = DPO(loss_type="ipo").loss(**batch)
    assert raw.item() == pytest.approx(4.0, abs=1e-12)
    with pytest.raises(ValueError, match="length"):
        DPO(length_normalize=True).loss(**dict(batch, rejected_lengths=torch.tensor([0])))


def test_sigmoid_gradient():
    # dℓ/dp_w = −β·σ(−β z), averaged over B = 2 pairs: −0.1·σ(−0.1·z)/2 for z = 1, 3.
    # −0.1·σ(−0.1)/2 = −0.023751040626053002; −0.1·σ(−0.3)/2 = −0.02127787415941705
    # dℓ/dp_l is the opposite; the reference gets no gradient.
    chosen = TWO["chosen_logps"].clone().requires_grad_()
    rejected = TWO["rejected_logps"].clone().requires_grad_()
    loss, metrics = DPO().loss(**dict(TWO, chosen_logps=chosen, rejected_logps=rejected))
    loss.backward()
    expected = t(-0.023751040626053002, -0.02127787415941705)
    torch.testing.assert_close(chosen.grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(rejected.grad, -expected, rtol=0, atol=1e-12)
    assert not any(v.requires_grad for v in metrics.values())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(loss_type="kto"), "algo.loss_type"),
        (dict(beta=0.0), "algo.beta"),
        (dict(label_smoothing=0.5), "algo.label_smoothing"),
        (dict(label_smoothing=-0.1), "algo.label_smoothing"),
        (dict(loss_type="ipo", label_smoothing=0.1), "algo.label_smoothing"),
        (dict(loss_type="hinge", label_smoothing=0.1), "algo.label_smoothing"),
        (dict(reduction="max"), "algo.reduction"),
    ],
)
def test_invalid_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DPO(**kwargs)


def test_loss_type_error_names_allowed_values():
    with pytest.raises(ValueError, match="'sigmoid', 'ipo', 'hinge'"):
        DPO(loss_type="kto")


def test_missing_reference_raises():
    with pytest.raises(ValueError, match="reference"):
        DPO().loss(t(-1.0), t(-3.0), None, None, t(1.0), t(1.0))


def test_broadcasting_shapes_rejected():
    with pytest.raises(ValueError, match="shape"):
        DPO().loss(**dict(TWO, chosen_logps=TWO["chosen_logps"][:, None]))


def test_class_attributes():
    assert DPO.batch_kind == "pair"
    assert DPO().needs_reference is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        DPO().beta = 0.2


def test_sft_weight_adds_per_token_chosen_nll():
    # RPO: loss = dpo + α · mean_i(-p_w,i / |y_w,i|).
    # Pairs: p_w = (-4, -9), |y_w| = (2, 3) -> per-token NLL = (2, 3), mean 2.5.
    # With r = p everywhere z = 0, so the sigmoid DPO part is -log σ(0) = log 2 = 0.693147.
    # α = 0.5: total = 0.693147 + 0.5 * 2.5 = 1.943147.
    pw = torch.tensor([-4.0, -9.0])
    pl = torch.tensor([-5.0, -6.0])
    lengths = torch.tensor([2.0, 3.0])
    loss, metrics = DPO(beta=0.1, sft_weight=0.5).loss(pw, pl, pw.clone(), pl.clone(), lengths, lengths)
    assert loss.item() == pytest.approx(0.6931472 + 1.25, abs=1e-6)
    assert metrics["loss/dpo"].item() == pytest.approx(0.6931472, abs=1e-6)
    assert metrics["loss/sft"].item() == pytest.approx(2.5, abs=1e-6)
    with pytest.raises(ValueError, match="algo.sft_weight"):
        DPO(sft_weight=-1.0)
