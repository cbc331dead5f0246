"""Pluralistic rewards: group-specific gold scores from trait rewards, and trained group reward models.

SharedRep-RLHF (Mukherjee et al. 2025, `marcellobullo/sharedrep-rlhf`) gives each group of users its own gold
reward, an affine combination of trait rewards. On HH (group 0 the minority, 1 the majority):
    minority = helpful,    majority = 0.3 helpful + 0.7 harmless
(Ray2333's GPT-2 helpful / harmless RMs). The gold reward of policy optimisation is the minimum over the
groups (`MinOverGroups`); evaluation scores each response under its own group (`GroupGold`). MaxMin-RLHF
(Chakraborty et al. 2024) and SharedRep reward models have one head per group and also reward the minimum
over heads at RL time (`GroupHeadsReward`).
"""

import logging
import math

import torch
from transformers import AutoTokenizer

from rlhf.algos.reward_model import min_over_heads
from rlhf.data.schema import as_messages
from rlhf.models.policy import DTYPES, check_dtype
from rlhf.models.reward_model import GroupRewardModel
from rlhf.rewards.base import Invalid, Reward, Score, score_checked, valid_scores
from rlhf.rewards.composite import check_weights, component_scores, weighted_sum
from rlhf.rewards.reward_model import (
    classifier_logits,
    format_chat_template,
    prepare_tokenizer,
    resolve_device,
)

ROUTES = ("min", "group")

log = logging.getLogger(__name__)


def group_ids(fields: list[dict] | None, n: int, num_groups: int, where: str) -> list[int]:
    """The `group_id` field of each of n conversations, checked to be a group of 0..num_groups-1."""
    if fields is None:
        raise ValueError(f"{where} needs each conversation's 'group_id' in fields; no fields were given")
    if len(fields) != n:
        raise ValueError(f"{where} got {len(fields)} fields for {n} conversations")
    ids = []
    for i, row in enumerate(fields):
        if "group_id" not in row:
            raise ValueError(f"{where}: the fields of conversation {i} have no 'group_id' "
                             f"(they have {sorted(row)})")
        group = row["group_id"]
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < num_groups:
            raise ValueError(f"{where}: conversation {i} has group_id={group!r}, not a group of "
                             f"0..{num_groups - 1}")
        ids.append(group)
    return ids


class GroupGold:
    """Each conversation's score under its own group g = fields["group_id"]:
    offsets[g] + sum_t groups[g][t] * traits[t].

    traits: named trait rewards (e.g. helpful, harmless), each computed once per conversation.
    groups: per group id 0..G-1, the weight of each trait it uses.
    offsets: per group a constant (e.g. IMDb's majority 1 - length/100 is offset 1, length weight -0.01);
        None for 0.
    `components(...)` gives the trait scores (for logging); `group_scores(...)` every group's score.
    """

    def __init__(self, traits: dict[str, Reward], groups: list[dict[str, float]],
                 offsets: list[float] | None = None) -> None:
        if not traits or not groups:
            raise ValueError("reward.traits and reward.groups must each name at least one entry")
        for g, weights in enumerate(groups):
            check_weights(weights, set(traits), f"reward.groups[{g}]")
        if offsets is not None and len(offsets) != len(groups):
            raise ValueError(f"reward.offsets has {len(offsets)} entries for {len(groups)} groups")
        self.traits = traits
        self.groups = [{t: float(w) for t, w in weights.items()} for weights in groups]
        self.offsets = [float(o) for o in offsets] if offsets is not None else [0.0] * len(groups)

    def components(
        self, conversations: list[list[dict]], fields: list[dict] | None = None
    ) -> dict[str, list[Score]]:
        return component_scores(self.traits, conversations, fields)

    def group_scores(
        self, conversations: list[list[dict]], fields: list[dict] | None = None
    ) -> list[list[Score]]:
        """(G, N): the score of every conversation under every group's gold."""
        parts = self.components(conversations, fields)
        return [weighted_sum(parts, weights, offset) for weights, offset in zip(self.groups, self.offsets)]

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        if not conversations:
            return []
        ids = group_ids(fields, len(conversations), len(self.groups), type(self).__name__)
        by_group = self.group_scores(conversations, fields)
        return [by_group[g][i] for i, g in enumerate(ids)]


class MinOverGroups(GroupGold):
    """min over groups g of GroupGold's score under g: the gold reward SharedRep optimises with GRPO,
    min(helpful, 0.3 helpful + 0.7 harmless) on HH. Needs no group_id. Invalid when a group's is."""

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        if not conversations:
            return []
        return lowest_over_groups(self.group_scores(conversations, fields))


def lowest_over_groups(by_group: list[list[Score]]) -> list[Score]:
    """(G, N) scores -> per conversation the minimum over groups; Invalid when a group's is."""
    scores: list[Score] = []
    for values in zip(*by_group):
        invalid = next((v for v in values if isinstance(v, Invalid)), None)
        scores.append(invalid if invalid is not None else min(values))
    return scores


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class SigmoidZScore:
    """sigmoid((r - mean) / std) of a trait reward r: SharedRep's GSM8K squashing sigma(z(trait)), where
    z standardises the trait with statistics of the scored dataset.

    mean, std: given; or both null and `fit_path` names the dataset they are computed from, as SharedRep's
    `add_stats` does: the trait of every response of its rows (`rlhf-generate mode=samples` rows: `prompt`,
    `responses`, and their other columns as fields), the mean and the population standard deviation (1.0
    when it is 0). Responses that cannot be scored are left out; none scored is an error.
    """

    def __init__(self, reward: Reward, mean: float | None = None, std: float | None = None,
                 fit_path: str | None = None) -> None:
        if (mean is None) != (std is None) or (mean is None) == (fit_path is None):
            raise ValueError(f"give reward mean and std, or fit_path to compute them (mean={mean}, std={std}, "
                             f"fit_path={fit_path!r})")
        if fit_path is not None:
            mean, std = fit_statistics(reward, fit_path)
            log.info("z statistics of the trait on %s: mean %.4f, std %.4f", fit_path, mean, std)
        if not std > 0:
            raise ValueError(f"reward std={std} must be positive")
        self.reward, self.mean, self.std = reward, float(mean), float(std)

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        return [s if isinstance(s, Invalid) else sigmoid((s - self.mean) / self.std)
                for s in score_checked(self.reward, conversations, fields)]


def fit_statistics(reward: Reward, path: str) -> tuple[float, float]:
    """(mean, population std or 1.0) of `reward` over every response of the samples dataset at `path`."""
    from rlhf.data.loading import load_rows
    from rlhf.tasks.group_labelling import PAIR_COLUMNS

    rows = load_rows(path)
    missing = [c for c in ("prompt", "responses") if c not in rows.column_names]
    if missing:
        raise ValueError(f"fit_path {path!r} has no column {missing[0]!r}: it takes rlhf-generate mode=samples "
                         f"rows (its columns: {rows.column_names})")
    # the row's other columns are its fields, as the pair labelling gives them to the gold
    others = [c for c in rows.column_names if c != "prompt" and c not in PAIR_COLUMNS["group"]]
    conversations, fields = [], []
    for row in rows:
        for response in row["responses"]:
            conversations.append(as_messages(row["prompt"], "user") + [{"role": "assistant", "content": response}])
            fields.append({c: row[c] for c in others})
    values = valid_scores(score_checked(reward, conversations, fields))
    if not values:
        raise ValueError(f"fit_path {path!r}: no response could be scored by the trait")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, std or 1.0


class GroupHeadsReward:
    """A trained MaxMin / SharedRep group reward model (`rlhf.models.reward_model.GroupRewardModel`, saved by
    `rlhf-train algo=maxmin_rm` or `algo=sharedrep_rm`) on the chat template of each conversation, the input
    it was trained on: the minimum over the group heads (route="min", the RL-time reward of both methods) or
    the head of the conversation's `group_id` (route="group").

    path: the saved model directory (backbone/, heads.safetensors, reward_model.json and the tokenizer).
    """

    def __init__(
        self,
        path: str,
        route: str = "min",
        max_length: int = 512,
        truncation_side: str = "left",
        batch_size: int = 8,
        dtype: str = "float32",
        device: str | None = None,
    ) -> None:
        if route not in ROUTES:
            raise ValueError(f"reward.route={route!r} is not one of {ROUTES}")
        check_dtype(dtype, "reward.dtype")
        self.route, self.max_length, self.batch_size = route, max_length, batch_size
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"the tokenizer of reward.path={path!r} has no chat template")
        prepare_tokenizer(self.tokenizer, truncation_side, batch_size, None, "reward")
        self.model = GroupRewardModel.from_pretrained(path).to(self.device, DTYPES[dtype]).eval()

    def head_scores(self, conversations: list[list[dict]]) -> torch.Tensor:
        """(N, G) rewards of every group head."""
        texts = [format_chat_template(c, self.tokenizer) for c in conversations]
        return classifier_logits(self.model, self.tokenizer, texts, self.batch_size, self.max_length,
                                 add_special_tokens=False, device=self.device)

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        if not conversations:
            return []
        if self.route == "min":
            return min_over_heads(self.head_scores(conversations)).tolist()
        ids = group_ids(fields, len(conversations), self.model.num_groups, type(self).__name__)
        heads = self.head_scores(conversations)  # (N, G)
        return heads[torch.arange(len(ids)), torch.tensor(ids)].tolist()
