"""Group labelling of unlabelled pairs (SharedRep's `create_chosen_rejected.py`): seeded Bernoulli groups at
the minority proportion, chosen = the reply the row's own group scores higher, ties dropped, bad rows named;
`data.proportion` drives it through the composed config and is refused for a task without labelling."""

import json
import math
from collections import Counter

import datasets
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, InstantiationException

from rlhf.config import CONF_DIR, build
from rlhf.data.schema import DataValidationError
from rlhf.rewards.gold import BagOfWords
from rlhf.rewards.pluralistic import GroupGold
from rlhf.tasks.dataset import DatasetTask
from rlhf.tasks.group_labelling import GroupLabelling

# group 0 (minority) scores bag-of-words hits of {happy, code}; group 1 0.3 of those + 0.7 hits of {stone, tree}
GOLD = GroupGold({"bow": BagOfWords(["happy", "code"]), "calm": BagOfWords(["stone", "tree"])},
                 [{"bow": 1.0}, {"bow": 0.3, "calm": 0.7}])
# "Happy code, stone.": bow 2, calm 1 -> group 0: 2,   group 1: 0.6 + 0.7 = 1.3
# "A stone tree.":      bow 0, calm 2 -> group 0: 0,   group 1: 1.4
# So group 0 prefers the first reply, group 1 the second.
HAPPY, CALM = "Happy code, stone.", "A stone tree."


def pair_rows(*pairs: tuple[str, str]) -> datasets.Dataset:
    return datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": f"Question {i}?"}],
                                        "responses": list(pair)} for i, pair in enumerate(pairs)])


def labelled(rows: datasets.Dataset, proportion: float, seed: int = 0, stream: str = "train", gold=GOLD):
    return GroupLabelling(gold, proportion, seed).label(rows, stream, "test rows")


def binomial_bound(n: int, p: float) -> float:
    """Five standard deviations of a Binomial(n, p) count: exceeded with probability below 1e-6."""
    return 5 * math.sqrt(n * p * (1 - p))


def test_realised_share_is_close_to_the_proportion():
    n = 20_000
    for p in (0.01, 0.1, 0.2):
        minority = int((GroupLabelling(GOLD, p, seed=42).draw(n, "train") == 0).sum())
        assert abs(minority - n * p) < binomial_bound(n, p), (p, minority)
    # through labelling: no pair ties under either group, so every row is kept with its drawn group
    rows, ties = labelled(pair_rows(*[(HAPPY, CALM)] * 4000), 0.2, seed=7)
    assert ties == 0 and len(rows) == 4000
    assert abs(rows["group_id"].count(0) - 800) < binomial_bound(4000, 0.2)


def test_same_seed_same_labels_other_seed_or_split_other_labels():
    def draws(seed: int, stream: str = "train") -> list[int]:
        return GroupLabelling(GOLD, 0.3, seed).draw(500, stream).tolist()

    assert draws(42) == draws(42)
    assert draws(42) != draws(123)
    assert draws(42, "train") != draws(42, "eval")  # the eval split has its own stream of the seed
    assert draws(42)[:100] == GroupLabelling(GOLD, 0.3, 42).draw(100, "train").tolist()  # a row limit keeps labels
    # one seed: a larger proportion only turns majority rows into minority rows
    low, high = GroupLabelling(GOLD, 0.05, 42).draw(500, "train"), GroupLabelling(GOLD, 0.2, 42).draw(500, "train")
    assert set((low == 0).nonzero()[0]) < set((high == 0).nonzero()[0])


def test_chosen_is_the_reply_the_rows_own_group_scores_higher():
    rows = pair_rows((HAPPY, CALM), (CALM, HAPPY))
    minority, _ = labelled(rows, 1.0)  # every row group 0: the bag-of-words reply wins, in either order
    assert minority["chosen"] == [HAPPY, HAPPY] and minority["rejected"] == [CALM, CALM]
    assert minority["group_id"] == [0, 0]
    assert minority["score_chosen"] == [2.0, 2.0] and minority["score_rejected"] == [0.0, 0.0]
    majority, _ = labelled(rows, 0.0)  # every row group 1: the calm reply wins (1.4 > 1.3)
    assert majority["chosen"] == [CALM, CALM] and majority["group_id"] == [1, 1]
    assert majority["score_chosen"] == pytest.approx([1.4, 1.4])
    assert majority["score_rejected"] == pytest.approx([1.3, 1.3])
    mixed, _ = labelled(pair_rows(*[(HAPPY, CALM)] * 50), 0.5, seed=3)
    assert 0 < mixed["group_id"].count(0) < 50
    for row in mixed:
        assert row["chosen"] == (HAPPY if row["group_id"] == 0 else CALM)


def test_ties_under_the_rows_group_are_dropped_and_counted():
    # "Happy." vs "Code.": bow 1 vs 1, calm 0 vs 0 -> a tie under both groups
    # "Happy stone." vs "Code.": group 0: 1 vs 1 (tie); group 1: 0.3 + 0.7 = 1.0 vs 0.3
    rows = pair_rows(("Happy.", "Code."), ("Happy stone.", "Code."), (HAPPY, CALM))
    minority, ties = labelled(rows, 1.0)
    assert ties == 2 and minority["chosen"] == [HAPPY]
    majority, ties = labelled(rows, 0.0)
    assert ties == 1 and majority["chosen"] == ["Happy stone.", CALM]
    with pytest.raises(ValueError, match=r"every one of its 1 pairs is a tie"):
        labelled(pair_rows(("Happy.", "Code.")), 0.5)


def test_preference_rows_are_read_as_unordered_pairs():
    rows = datasets.Dataset.from_list([{"prompt": "Hi?", "chosen": CALM, "rejected": HAPPY, "group_id": 1,
                                        "score_chosen": 5.0, "score_rejected": 1.0}])
    out, _ = labelled(rows, 1.0)  # relabelled as group 0, which prefers the given "rejected" reply
    assert out[0] == {"prompt": [{"role": "user", "content": "Hi?"}], "chosen": HAPPY, "rejected": CALM,
                      "group_id": 0, "score_chosen": 2.0, "score_rejected": 0.0}


def test_the_row_columns_reach_the_gold_as_fields():
    class Echo:  # scores each response by its row's `weight` column, times the response's length
        def score(self, conversations, fields=None):
            return [f["weight"] * len(c[-1]["content"]) for c, f in zip(conversations, fields)]

    gold = GroupGold({"echo": Echo()}, [{"echo": 1.0}, {"echo": -1.0}])
    rows = datasets.Dataset.from_list([{"prompt": "Hi?", "responses": ["a", "bbb"], "weight": 2.0}])
    out, _ = labelled(rows, 1.0, gold=gold)
    assert (out[0]["chosen"], out[0]["score_chosen"], out[0]["score_rejected"]) == ("bbb", 6.0, 2.0)


def test_a_pair_with_an_empty_reply_is_dropped_and_the_other_rows_keep_their_groups(caplog):
    full = labelled(pair_rows(*[(HAPPY, CALM)] * 6), 0.5, seed=3)[0]
    rows = pair_rows(*[(HAPPY, CALM)] * 6).to_list()
    rows[2]["responses"] = [HAPPY, " \n"]
    out, ties = labelled(datasets.Dataset.from_list(rows), 0.5, seed=3)
    assert ties == 0 and "1 of 6 pairs dropped for an empty reply" in caplog.text
    assert out.to_list() == [r for i, r in enumerate(full.to_list()) if i != 2]
    with pytest.raises(ValueError, match="every one of its 1 pairs has an empty reply"):
        labelled(pair_rows(("", CALM)), 0.5)
    with pytest.raises(DataValidationError, match="column 'rejected' is an empty turn"):  # preference data
        labelled(datasets.Dataset.from_list([{"prompt": "Hi?", "chosen": "a", "rejected": " "}]), 0.5)


def test_bad_rows_are_named():
    rows = datasets.Dataset.from_list([
        {"prompt": "Fine?", "responses": ["one", "two"]},
        {"prompt": "Three?", "responses": ["one", "two", "three"]},
        {"prompt": "", "responses": ["one", " "]},
    ])
    with pytest.raises(DataValidationError) as excinfo:
        labelled(rows, 0.5)
    message = str(excinfo.value)
    assert "2 invalid row(s) in test rows" in message
    assert "row 1: column 'responses' must hold exactly 2 replies to label a pair, not 3" in message
    assert "row 2: column 'prompt' is an empty turn" in message and "item 1" not in message  # an empty reply drops
    with pytest.raises(DataValidationError, match=r"needs columns 'prompt' and 'responses'"):
        labelled(datasets.Dataset.from_list([{"prompt": "Hi?", "chosen": "a"}]), 0.5)


def test_invalid_scores_and_scoring_errors_name_the_row():
    class NanOn:  # nan for the response "nan", an error for the response "boom"
        def score(self, conversations, fields=None):
            texts = [c[-1]["content"] for c in conversations]
            if "boom" in texts:
                raise RuntimeError("the scorer broke")
            return [math.nan if t == "nan" else 1.0 + len(t) for t in texts]

    gold = GroupGold({"t": NanOn()}, [{"t": 1.0}, {"t": 2.0}])
    rows = pair_rows(("ok", "fine"), ("good", "nan"))
    with pytest.raises(DataValidationError, match=r"row 1: response 1 under group 0: t: reward is nan"):
        labelled(rows, 1.0, gold=gold)
    with pytest.raises(ValueError, match=r"task\.groups\.gold failed to score row 2: the scorer broke"):
        labelled(pair_rows(("ok", "fine"), ("a", "bb"), ("boom", "x")), 1.0, gold=gold)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"task\.groups\.proportion=1\.5 \(set as data\.proportion\) must be"):
        GroupLabelling(GOLD, 1.5, 0)
    with pytest.raises(ValueError, match=r"task\.groups\.proportion=None"):
        GroupLabelling(GOLD, None, 0)
    three = GroupGold(GOLD.traits, [{"bow": 1.0}, {"calm": 1.0}, {"bow": 1.0, "calm": 1.0}])
    with pytest.raises(ValueError, match=r"task\.groups\.gold has 3 groups"):
        GroupLabelling(three, 0.1, 0)
    with pytest.raises(TypeError, match=r"task\.groups\.gold must score every group .* not a BagOfWords"):
        GroupLabelling(BagOfWords(["happy"]), 0.1, 0)


def test_a_labelling_task_needs_the_preference_schema(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "Hi?", "responses": [HAPPY, CALM]}) + "\n")
    with pytest.raises(ValueError, match=r"task\.schema must be 'preference', not 'conversation'"):
        DatasetTask("t", "conversation", train_path=str(path), groups=GroupLabelling(GOLD, 0.1, 0))
    task = DatasetTask("t", "preference", train_path=str(path), groups=GroupLabelling(GOLD, 0.0, 0))
    assert task.train["chosen"] == [CALM] and task.eval is None


# ---- through the composed config ----------------------------------------------------------------------


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def test_data_proportion_drives_the_labelling_of_the_bundled_pairs(tmp_path):
    counts = {}
    for p in (0.01, 0.2):
        cfg = compose_train(["experiment=sharedrep_proportion", f"data.proportion={p}", "seed=42",
                             f"run_dir={tmp_path}"])
        assert cfg.task.groups.proportion == p and build(cfg.data).proportion == p  # one key drives both
        task = build(cfg.task)
        counts[p] = Counter(task.train["group_id"])
        n = len(task.train)
        assert 1800 < n <= 2000  # of 2000 pairs, the ties under their group are dropped
        assert abs(counts[p][0] - n * p) < binomial_bound(n, p) + 1, counts[p]
        assert task.eval is not None and set(task.eval["group_id"]) <= {0, 1}
    assert counts[0.01][0] < counts[0.2][0]
    default = compose_train(["task=synthetic_pluralistic_pairs", f"run_dir={tmp_path}"])
    assert default.data.proportion == 0.1 and default.task.groups.proportion == 0.1


def test_the_bundled_gold_scores_bag_of_words_and_calm_words():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        gold = build(compose("train", overrides=["reward=gold_synthetic_pluralistic"]).reward)
    reply = [{"role": "user", "content": "Hi?"},
             {"role": "assistant", "content": "Happy tree, safe stone near the old road."}]
    # bag-of-words words: happy, safe (2); calm words: tree, stone, near, old, road (5)
    assert gold.group_scores([reply]) == [[2.0], [pytest.approx(0.3 * 2 + 0.7 * 5)]]


def test_data_proportion_for_a_task_without_labelling_is_an_error():
    for task in ("synthetic_prefs", "synthetic_pluralistic"):
        with pytest.raises(ConfigCompositionException, match=r"Could not override 'data\.proportion'"):
            compose_train([f"task={task}", "data.proportion=0.05"])
    cfg = compose_train(["task=synthetic_pluralistic_pairs", "data.proportion=2"])
    with pytest.raises(InstantiationException, match=r"task\.groups\.proportion=2 \(set as data\.proportion\)"):
        build(cfg.task)
