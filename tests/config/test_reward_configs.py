"""The reward-model, composite and pluralistic reward options compose, instantiate (with their hub models
replaced by tiny local classifiers) and score a conversation."""

import json
import math

import pytest
from hydra import compose, initialize_config_dir

from rlhf.config import CONF_DIR, build
from rlhf.models.tiny import load_tiny_reward_model
from rlhf.rewards.base import score_checked
from rlhf.rewards.comet_critic import CometCriticReward, comet_prompt
from rlhf.rewards.composite import Composite
from rlhf.rewards.gold import Length
from rlhf.rewards.pluralistic import GroupGold, GroupHeadsReward, MinOverGroups, SigmoidZScore
from rlhf.rewards.reward_model import SequenceClassifierReward
from rlhf.rewards.scalar_model import ScalarModelReward
from rlhf.rewards.tfidf import TfIdf
from rlhf.rewards.toxichat import ToxiChatSafe
from tests.unit.tiny_classifier import (
    build_classifier,
    build_comet_critic,
    build_remote_code_rm,
    build_toxichat,
)

CONVERSATION = [{"role": "user", "content": "Tell me about the ocean."},
                {"role": "assistant", "content": "It is large and salty."}]
COMET_CONVERSATION = [{"role": "user", "content": comet_prompt("PersonX swims in the ocean", "xReact")},
                      {"role": "assistant", "content": "refreshed"}]
FIELDS = {"knowledge": "The ocean is salt water.", "group_id": 1, "answer": "Oceans cover 71%.\n#### 71"}


@pytest.fixture(scope="module")
def models(tiny_path, tiny_cache, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("reward-configs")
    group = load_tiny_reward_model(tiny_cache, architecture={}, num_groups=2, shared_dim=4,
                                   freeze_backbone=True)
    group.save(root / "group")
    samples = root / "samples.jsonl"  # rlhf-generate mode=samples rows, for the z statistics of GSM8K's gold
    samples.write_text("".join(json.dumps({"prompt": "q", "responses": r}) + "\n"
                               for r in (["one two", "three"], ["four five six", "seven eight"])))
    responses = root / "responses.jsonl"
    responses.write_text("".join(json.dumps({"chosen": t}) + "\n" for t in ["the sea is big", "salty water"]))
    return {
        "scalar": build_classifier(tiny_path, root / "scalar", num_labels=1),
        "binary": build_classifier(tiny_path, root / "binary", num_labels=2, labels=["NEGATIVE", "POSITIVE"]),
        "group": str(root / "group"),
        "comet_critic": build_comet_critic(tiny_path, root / "comet_critic"),
        "remote": build_remote_code_rm(tiny_path, root / "remote"),
        "toxichat": build_toxichat(tiny_path, root / "toxichat"),
        "responses": str(responses),
        "samples": str(samples),
    }


def classifier(prefix: str, path: str, padded: bool = False) -> list[str]:
    """Overrides pointing one classifier config at a tiny model (its own pad token: the tiny tokenizer has
    no <|endoftext|>)."""
    return [f"{prefix}.path={path}"] + ([f"{prefix}.pad_token=null"] if padded else [])


def overrides(option: str, m: dict[str, str]) -> list[str]:
    tfidf = lambda prefix: [f"{prefix}.responses={m['responses']}", f"{prefix}.column=chosen"]  # noqa: E731
    return {
        "armorm": classifier("reward", m["scalar"]),
        "fsfairx": classifier("reward", m["scalar"]),
        "oasst_pythia": classifier("reward", m["scalar"]),
        "gpt2_harmless": classifier("reward", m["scalar"], padded=True),
        "gpt2_helpful": classifier("reward", m["scalar"], padded=True),
        "dialogrpt_updown": classifier("reward", m["scalar"], padded=True),
        "dialogrpt_depth": classifier("reward", m["scalar"], padded=True),
        "cola": classifier("reward", m["binary"]),
        "faithcritic": classifier("reward", m["binary"]),
        "imdb_sentiment": classifier("reward", m["binary"]),
        "reward_model": classifier("reward", m["scalar"]),
        "alol_reddit": [*classifier("reward.components.fluency", m["binary"]),
                        *classifier("reward.components.depth", m["scalar"], padded=True),
                        *classifier("reward.components.updown", m["scalar"], padded=True),
                        f"reward.components.safe.path={m['toxichat']}", *tfidf("reward.components.tfidf")],
        "alol_wow": [*classifier("reward.components.fluency", m["binary"]),
                     *classifier("reward.components.faithdial", m["binary"]),
                     *classifier("reward.components.depth", m["scalar"], padded=True),
                     *tfidf("reward.components.tfidf")],
        "gold_hh_pluralistic": [*classifier("reward.traits.helpful", m["scalar"], padded=True),
                                *classifier("reward.traits.harmless", m["scalar"], padded=True)],
        "gold_imdb_pluralistic": classifier("reward.traits.positiveness", m["binary"]),
        "gold_gsm8k_pluralistic": [
            *classifier("reward.traits.socratic.reward", m["scalar"]),
            f"reward.traits.socratic.fit_path={m['samples']}", f"reward.traits.length.fit_path={m['samples']}",
        ],
        "group_rm": [f"reward.path={m['group']}"],
        "comet_critic": [f"reward.path={m['comet_critic']}"],
        "toxichat_safe": [f"reward.path={m['toxichat']}"],
        "eurus_rm": [f"reward.path={m['remote']}", "reward.pad_token=null", "reward.dtype=float32"],
        "gold_synthetic_pluralistic": [],  # bag-of-words traits: no model
        "gold_imdb_words": [],
        "gold_gsm8k_words": [f"reward.traits.socratic.fit_path={m['samples']}",
                             f"reward.traits.length.fit_path={m['samples']}"],
    }[option]


EXPECTED = {
    **{name: SequenceClassifierReward for name in (
        "armorm", "fsfairx", "oasst_pythia", "gpt2_harmless", "gpt2_helpful", "dialogrpt_updown",
        "dialogrpt_depth", "cola", "faithcritic", "imdb_sentiment", "reward_model")},
    "alol_reddit": Composite,
    "alol_wow": Composite,
    "gold_hh_pluralistic": GroupGold,
    "gold_imdb_pluralistic": GroupGold,
    "gold_gsm8k_pluralistic": GroupGold,
    "gold_synthetic_pluralistic": GroupGold,
    "gold_imdb_words": GroupGold,
    "gold_gsm8k_words": GroupGold,
    "group_rm": GroupHeadsReward,
    "comet_critic": CometCriticReward,
    "eurus_rm": ScalarModelReward,
    "toxichat_safe": ToxiChatSafe,
}


def build_reward(option: str, extra: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"reward={option}", "run_dir=/tmp/unused", *extra])
    return build(cfg.reward)


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_reward_option_builds_and_scores(option, models):
    reward = build_reward(option, overrides(option, models))
    assert type(reward) is EXPECTED[option]
    conversation = COMET_CONVERSATION if option == "comet_critic" else CONVERSATION
    [score] = score_checked(reward, [conversation], [FIELDS])
    assert isinstance(score, float) and math.isfinite(score)


def test_composites_are_built_from_the_model_configs(models):
    reddit = build_reward("alol_reddit", overrides("alol_reddit", models))
    assert list(reddit.rewards) == ["fluency", "depth", "updown", "safe", "tfidf"]
    assert isinstance(reddit.rewards["safe"], ToxiChatSafe)
    assert reddit.rewards["depth"].format == "dialogrpt" and reddit.rewards["fluency"].label == 1
    assert isinstance(reddit.rewards["tfidf"], TfIdf)
    wow = build_reward("alol_wow", overrides("alol_wow", models))
    assert wow.rewards["faithdial"].pair_field == "knowledge"
    assert set(wow.weights.values()) == {1.0}


def test_pluralistic_golds(models):
    hh = build_reward("gold_hh_pluralistic", overrides("gold_hh_pluralistic", models))
    assert hh.groups == [{"helpful": 1.0}, {"helpful": 0.3, "harmless": 0.7}]
    hh_min = build_reward("gold_hh_pluralistic", [*overrides("gold_hh_pluralistic", models),
                                                  "reward._target_=rlhf.rewards.pluralistic.MinOverGroups"])
    assert type(hh_min) is MinOverGroups
    gsm8k = build_reward("gold_gsm8k_pluralistic", overrides("gold_gsm8k_pluralistic", models))
    length = gsm8k.traits["length"]
    assert isinstance(length, SigmoidZScore) and isinstance(length.reward, Length)
    # z fitted on the samples' word counts 2, 1, 3, 2: mean 2, population std sqrt(0.5)
    assert (length.mean, length.std) == pytest.approx((2.0, math.sqrt(0.5)))
    # majority: 0.8 (1 - sigmoid(z(length))) + 0.2 correct, on a reply of 5 words and no number (not 71)
    expected = 0.8 * (1 - 1 / (1 + math.exp(-(5 - 2.0) / math.sqrt(0.5)))) + 0.2 * 0.0
    assert gsm8k.score([CONVERSATION], [FIELDS]) == pytest.approx([expected])
