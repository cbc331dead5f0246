"""A reward's score of each conversation and its named parts, computed once: what evaluations report.

- a composite reward (A-LoL's multi-component rewards): each component, and the weighted sum as the reward;
- a pluralistic gold (`GroupGold`): every group's gold (`group_<g>`, SharedRep's minority and majority side
  by side); the reward is the score under the conversation's own `group_id` where every conversation has
  one, else the minimum over groups (the reward SharedRep optimises, `MinOverGroups`), and it says which;
- an LLM judge with several scores (`PointwiseJudge`: accuracy, interactivity, ...): each score, and their
  weighted combination as the reward;
- any other reward: the reward alone.
"""

from rlhf.rewards.base import Invalid, Reward, Score, last_response, score_checked, screen_response
from rlhf.rewards.composite import Composite
from rlhf.rewards.judge import PointwiseJudge
from rlhf.rewards.pluralistic import GroupGold, MinOverGroups, lowest_over_groups


def scored(reward: Reward, conversations: list[list[dict]], fields: list[dict] | None = None
           ) -> tuple[list[Score], dict[str, list[Score]], str]:
    """(the reward of each conversation, {part name: scores}, what the reward is)."""
    if isinstance(reward, Composite):
        parts = reward.components(conversations, fields)
        return reward.combine(parts), {f"component/{k}": v for k, v in parts.items()}, "weighted sum of components"
    if isinstance(reward, GroupGold):
        by_group = reward.group_scores(conversations, fields)
        parts = {f"group_{g}": scores for g, scores in enumerate(by_group)}
        own = fields is not None and len(fields) == len(conversations) and all("group_id" in f for f in fields)
        if own and not isinstance(reward, MinOverGroups):
            return [by_group[f["group_id"]][i] for i, f in enumerate(fields)], parts, "each response's own group"
        return lowest_over_groups(by_group), parts, "minimum over groups"
    if isinstance(reward, PointwiseJudge):  # the judge is asked only about responses that can be scored
        screened = [screen_response(last_response(c)) for c in conversations]
        keep = [i for i, s in enumerate(screened) if s is None]
        asked = reward.rate([conversations[i] for i in keep], [fields[i] for i in keep] if fields else None)
        rated: list = list(screened)
        for i, r in zip(keep, asked):
            rated[i] = r
        parts = {f"judge/{k}": [r if isinstance(r, Invalid) else float(r[k]) for r in rated] for k in reward.keys}
        return [r if isinstance(r, Invalid) else reward.combine(r) for r in rated], parts, "the judge's weighted scores"
    return score_checked(reward, conversations, fields), {}, "reward"


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n over a set of responses: distinct word n-grams / all word n-grams (0 when there are none)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
