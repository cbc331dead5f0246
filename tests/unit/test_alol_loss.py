"""A-LoL family losses against hand-derived numbers (ε = 0.9 unless stated: ratios clamped to [0.1, 1.9])."""

import math

import pytest
import torch

from rlhf.algos.alol import ALoL


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# Two examples of three response positions; position (0, 2) is masked out (its values are never used).
LOGPROBS = t([-1.0, -2.0, -5.0], [-0.5, -1.5, -3.0])
REF = t([-1.5, -2.0, -9.0], [-0.5, -0.5, -1.0])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
REWARDS = t(0.8, 0.4)
ADVANTAGES = t(0.5, 0.25)
# NLL_θ = (1 + 2, 0.5 + 1.5 + 3) = (3, 5);  NLL_ref = (1.5 + 2, 0.5 + 0.5 + 1) = (3.5, 2)
# log ρ = NLL_ref − NLL_θ = (0.5, −3):  ρ = (e^0.5, e^−3) = (1.6487212707001282, 0.049787068367863944)
# clip to [0.1, 1.9]: (1.6487212707001282, 0.1), so example 1 is clipped and example 0 is not.
E_HALF = 1.6487212707001282


def run(algo: ALoL, logprobs=LOGPROBS, ref=REF, mask=MASK, rewards=REWARDS, advantages=ADVANTAGES):
    return algo.loss(logprobs=logprobs, response_mask=mask, rewards=rewards, advantages=advantages,
                     ref_logprobs=ref)


@pytest.mark.parametrize(
    "algo, expected",
    [
        # nll: mean(3, 5) = 4
        (ALoL("nll"), 4.0),
        # wbc: mean(0.8·3, 0.4·5) = mean(2.4, 2.0) = 2.2
        (ALoL("wbc"), 2.2),
        # r_gold, u = 0.1, token weight max(e^logπ, 0.1):
        #   example 0: e^−1·1 + e^−2·2 = 0.36787944117144233 + 0.2706705664732254 = 0.6385500076446677, ×0.8
        #            = 0.5108400061157342
        #   example 1: e^−0.5·0.5 + e^−1.5·1.5 + max(e^−3, 0.1)·3
        #            = 0.3032653298563167 + 0.33469524022264473 + 0.3 = 0.9379605700789614,
        #            ×0.4 = 0.37518422803158457
        #   mean = 0.4430121170736594
        (ALoL("r_gold"), 0.4430121170736594),
        # r_lol: mean(0.8·e^0.5·3, 0.4·0.1·5) = mean(3.9569310496803077, 0.2) = 2.078465524840154
        (ALoL("r_lol"), 2.078465524840154),
        # r_lol, β = 0.2, no ratio: R·NLL + β(NLL_ref − NLL)
        #   = (2.4 + 0.2·0.5, 2.0 + 0.2·(−3)) = (2.5, 1.4) → 1.95
        (ALoL("r_lol", ppo_clip=None, kl_beta=0.2), 1.95),
        # a_lol: mean(0.5·e^0.5·3, 0.25·0.1·5) = mean(2.4730819060501923, 0.125) = 1.2990409530250962
        (ALoL("a_lol"), 1.2990409530250962),
        # a_lol unclipped: mean(2.4730819060501923, 0.25·e^−3·5 = 0.06223383545982993) = 1.267657870755011
        (ALoL("a_lol", ppo_clip=None), 1.267657870755011),
        # a_lol_seq, ρ_t = e^(logπ − logπ_ref):
        #   example 0: ρ = (e^0.5, e^0) → e^0.5·1 + 1·2 = 3.648721270700128, ×0.5 = 1.824360635350064
        #   example 1: ρ = (e^0, e^−1, e^−2), all inside [0.1, 1.9]
        #            → 1·0.5 + 0.36787944117144233·1.5 + 0.1353352832366127·3 = 1.4578250114670016, ×0.25
        #            = 0.3644562528667504
        #   mean = 1.094408444108407
        (ALoL("a_lol_seq"), 1.094408444108407),
        # a_lol_seq, ε = 0.2 → [0.8, 1.2]: example 0: 1.2·1 + 1·2 = 3.2, ×0.5 = 1.6;
        #   example 1: 1·0.5 + 0.8·1.5 + 0.8·3 = 4.1, ×0.25 = 1.025; mean 1.3125
        (ALoL("a_lol_seq", ppo_clip=0.2), 1.3125),
        # a_lol_ref_free: mean(0.5·3, 0.25·5) = mean(1.5, 1.25) = 1.375
        (ALoL("a_lol_ref_free"), 1.375),
        # a_lol_kl, β = 0.2: (1.5 + 0.2·0.5, 1.25 + 0.2·(−3)) = (1.6, 0.65) → 1.125
        (ALoL("a_lol_kl", ppo_clip=None, kl_beta=0.2), 1.125),
    ],
)
def test_each_variant_by_hand(algo, expected):
    loss, metrics = run(algo)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert metrics["loss/alol"].item() == pytest.approx(expected, abs=1e-12)
    assert metrics["nll/mean"].item() == pytest.approx(4.0, abs=1e-12)
    assert not any(m.requires_grad for m in metrics.values())


def test_ratio_metrics_by_hand():
    # a_lol: weights A⁺·clip(ρ) = (0.5·e^0.5, 0.25·0.1) = (0.8243606353500641, 0.025)
    #   → mean 0.42468031767503205
    # ratio/mean is the unclipped ρ: (e^0.5 + e^−3)/2 = 0.8492541695340061; one of two clipped.
    _, m = run(ALoL("a_lol"))
    assert m["weights/mean"].item() == pytest.approx(0.42468031767503205, abs=1e-12)
    assert m["ratio/mean"].item() == pytest.approx(0.8492541695340061, abs=1e-12)
    assert m["ratio/clipfrac"].item() == pytest.approx(0.5)
    # a_lol_seq, ε = 0.2: over the 5 response tokens ρ_t = (e^0.5, 1, 1, e^−1, e^−2), mean
    # 4.151935995108183/5 = 0.8303871990216366; e^0.5, e^−1 and e^−2 are clipped: 3/5.
    # weights: A⁺ × token-mean clipped ratio = (0.5·(1.2 + 1)/2, 0.25·(1 + 0.8 + 0.8)/3) = (0.55, 0.21666…)
    _, m = run(ALoL("a_lol_seq", ppo_clip=0.2))
    assert m["ratio/mean"].item() == pytest.approx(0.8303871990216366, abs=1e-12)
    assert m["ratio/clipfrac"].item() == pytest.approx(0.6)
    assert m["weights/mean"].item() == pytest.approx((0.55 + 0.65 / 3) / 2, abs=1e-12)
    # wbc has no ratio: weights are R, mean 0.6; ratio 1, nothing clipped.
    _, m = run(ALoL("wbc"))
    assert m["weights/mean"].item() == pytest.approx(0.6, abs=1e-12)
    assert m["ratio/mean"].item() == 1.0 and m["ratio/clipfrac"].item() == 0.0
    # The KL variants report mean(NLL_ref − NLL_θ) = (0.5 − 3)/2 = −1.25.
    _, m = run(ALoL("a_lol_kl", ppo_clip=None, kl_beta=0.2))
    assert m["kl/mean"].item() == pytest.approx(-1.25, abs=1e-12)


@pytest.mark.parametrize(
    "algo",
    [
        ALoL("nll"),
        ALoL("wbc"),
        ALoL("r_gold"),
        ALoL("r_lol"),
        ALoL("r_lol", ppo_clip=None, kl_beta=0.2),
        ALoL("a_lol"),
        ALoL("a_lol_seq"),
        ALoL("a_lol_ref_free"),
        ALoL("a_lol_kl", ppo_clip=None, kl_beta=0.2),
    ],
)
def test_masked_tokens_contribute_nothing(algo):
    expected, _ = run(algo)
    logprobs, ref = LOGPROBS.clone(), REF.clone()
    logprobs[0, 2], ref[0, 2] = -math.inf, math.nan
    loss, metrics = run(algo, logprobs=logprobs, ref=ref)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert all(bool(torch.isfinite(m)) for m in metrics.values())


def test_ratio_is_a_detached_weight():
    # a_lol: ∂L/∂logπ_bt = −A⁺_b·clip(ρ_b)·m_bt / B, with no derivative through ρ:
    #   example 0: −0.5·e^0.5/2 = −0.41218031767503205 on its two tokens; example 1: −0.25·0.1/2 = −0.0125.
    logprobs = LOGPROBS.clone().requires_grad_()
    loss, _ = run(ALoL("a_lol"), logprobs=logprobs)
    loss.backward()
    g0, g1 = -0.5 * E_HALF / 2, -0.25 * 0.1 / 2
    torch.testing.assert_close(logprobs.grad, t([g0, g0, 0.0], [g1, g1, g1]))


def test_zero_and_negative_advantages_give_zero_loss_and_gradient():
    for advantages in (t(0.0, 0.0), t(-1.0, -0.25)):
        for algo in (ALoL("a_lol"), ALoL("a_lol_seq"), ALoL("a_lol_ref_free")):
            logprobs = LOGPROBS.clone().requires_grad_()
            loss, metrics = run(algo, logprobs=logprobs, advantages=advantages)
            loss.backward()
            assert loss.item() == 0.0
            assert metrics["weights/mean"].item() == 0.0
            assert torch.equal(logprobs.grad, torch.zeros_like(LOGPROBS))


def test_clip_boundaries():
    # One token per example, NLL 1, A = 1, ε = 0.5 → [0.5, 1.5]. Loss per example = clip(ρ).
    logratios = [0.4, 0.41, -0.69, -0.7]  # ρ = 1.4918 (kept), 1.5068 (→ 1.5), 0.5016 (kept), 0.4966 (→ 0.5)
    expected = [math.exp(0.4), 1.5, math.exp(-0.69), 0.5]
    for logratio, want in zip(logratios, expected):
        batch = dict(logprobs=t([-1.0]), ref=t([-1.0 - logratio]), mask=torch.ones(1, 1, dtype=torch.bool),
                     advantages=t(1.0))
        for variant in ("a_lol", "a_lol_seq"):
            loss, m = run(ALoL(variant, ppo_clip=0.5), **batch)
            assert loss.item() == pytest.approx(want, abs=1e-12)
            assert m["ratio/clipfrac"].item() == float(want in (0.5, 1.5))
    # ε = None: no clipping at all, e^3 stays e^3.
    loss, m = run(ALoL("a_lol", ppo_clip=None), logprobs=t([-1.0]), ref=t([-4.0]),
                  mask=torch.ones(1, 1, dtype=torch.bool), advantages=t(1.0))
    assert loss.item() == pytest.approx(math.exp(3), abs=1e-12)
    assert m["ratio/clipfrac"].item() == 0.0


@pytest.mark.parametrize(
    "algo, needs_reference, uses_advantages",
    [
        (ALoL("nll"), False, False),
        (ALoL("wbc"), False, False),
        (ALoL("r_gold"), False, False),
        (ALoL("r_lol"), True, False),
        (ALoL("r_lol", ppo_clip=None, kl_beta=0.1), True, False),
        (ALoL("a_lol"), True, True),
        (ALoL("a_lol", ppo_clip=None), True, True),
        (ALoL("a_lol_seq"), True, True),
        (ALoL("a_lol_ref_free"), False, True),
        (ALoL("a_lol_kl", ppo_clip=None, kl_beta=0.1), True, True),
    ],
)
def test_needs_reference_and_advantages(algo, needs_reference, uses_advantages):
    assert algo.needs_reference is needs_reference
    assert algo.uses_advantages is uses_advantages
    assert algo.batch_kind == "sequence"


def test_reference_free_variants_run_without_reference():
    for variant in ("nll", "wbc", "r_gold", "a_lol_ref_free"):
        algo = ALoL(variant)
        loss, _ = algo.loss(logprobs=LOGPROBS, response_mask=MASK, rewards=REWARDS, advantages=ADVANTAGES)
        assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="ppo"), "algo.variant"),
        (dict(variant="a_lol", ppo_clip=0.0), "algo.ppo_clip"),
        (dict(variant="a_lol", ppo_clip=-0.1), "algo.ppo_clip"),
        (dict(variant="a_lol_kl", ppo_clip=None, kl_beta=-1.0), "algo.kl_beta"),
        (dict(variant="a_lol", kl_beta=0.1), "algo.kl_beta"),
        (dict(variant="a_lol_kl", ppo_clip=None), "algo.kl_beta"),
        (dict(variant="r_lol", kl_beta=0.1), "algo.ppo_clip"),
        (dict(variant="r_gold", gold_lower_bound=1.5), "algo.gold_lower_bound"),
    ],
)
def test_invalid_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ALoL(**kwargs)


def test_missing_inputs_raise():
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        ALoL("a_lol").loss(logprobs=LOGPROBS, response_mask=MASK, advantages=ADVANTAGES)
    with pytest.raises(ValueError, match="needs advantages"):
        run(ALoL("a_lol"), advantages=None)
    with pytest.raises(ValueError, match="needs rewards"):
        run(ALoL("wbc"), rewards=t(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="must match"):
        run(ALoL("nll"), mask=MASK[:, :2])
