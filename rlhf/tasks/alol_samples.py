"""Small samples of A-LoL's rewarded Reddit, Wizard-of-Wikipedia and COMET data (`task.format: alol_rewarded`), in
the raw schema A-LoL's preprocessing writes, for the CPU twins of the A-LoL experiments:

    python -m rlhf.tasks.alol_samples data/samples

writes alol_reddit/{pos_train,neg_train,val}.jsonl, alol_wow/{train,val}.jsonl and alol_comet/{train,val}.jsonl
there (COMET's prompts as `rlhf.rewards.comet_critic.comet_prompt` writes them); the bundled files are
that command's output. The texts are built from the short phrase lists below (none comes from the datasets).
Each row's `reward_components` holds one component, `tfidf` (`rlhf.rewards.tfidf`, fitted on the `references`
of its train file, as the twins' reward is; Reddit's val rows with the pos_train fit), and `final_reward`, their
sum. The published files also hold A-LoL's classifier components, and Reddit's tf-idf is fitted on both train
splits together.
"""

import random
import sys
from pathlib import Path

from rlhf.atomic import write_jsonl
from rlhf.data.sources import ALOL_SEPARATOR as EOS
from rlhf.rewards.comet_critic import comet_prompt
from rlhf.rewards.tfidf import TfIdf

TOPICS = ["the new bridge downtown", "my sourdough starter", "the last season finale", "electric scooters",
          "the library renovation", "winter cycling", "home espresso machines", "the city marathon",
          "learning the violin at forty", "container gardening", "the local bookstore closing", "night trains"]
OPINIONS = ["honestly it changed how I spend my weekends", "it is way more expensive than anyone admits",
            "I did not expect to care this much about it", "my neighbours have very strong feelings about it",
            "it took me three tries to get it right", "nobody talks about how noisy it is"]
SPECIFIC = ["The trick is to keep the {t} schedule consistent and write down what changes each week.",
            "I tried {t} for a year; the first month is hard, then the routine carries you.",
            "Check the maintenance records before you commit to {t}, they tell you more than reviews.",
            "Our club compared notes on {t} and the cheapest option lasted the longest.",
            "If you keep a small budget spreadsheet for {t} the surprises mostly disappear."]
GENERIC = ["lol same", "this", "I agree.", "ok", "who cares", "nice", "same here honestly"]
KNOWLEDGE = ["{t} was first proposed by a volunteer committee in 1998.",
             "Surveys list {t} among the most discussed local topics of the decade.",
             "{t} requires regular maintenance, usually twice a year.",
             "Early versions of {t} were much smaller than the current ones."]
QUESTIONS = ["Have you heard much about {t}?", "What do you think about {t}?", "Is {t} worth the trouble?"]
FOLLOW_UPS = ["That is interesting, tell me more.", "I did not know that.", "Why do people argue about it?"]
EVENTS = ["PersonX bakes bread for PersonY", "PersonX misses the last train", "PersonX joins a choir",
          "PersonX repairs the old bicycle", "PersonX moves to a new city", "PersonX forgets PersonY's birthday",
          "PersonX plants tomatoes", "PersonX wins the chess tournament"]
TAILS = {"xWant": ["to share the result with friends", "to rest for a while", "to try again tomorrow"],
         "xNeed": ["to buy the ingredients", "to check the schedule", "to practice every evening"],
         "xReact": ["proud and relieved", "tired but happy", "embarrassed and sorry"],
         "xAttr": ["generous", "careless", "determined"],
         "xEffect": ["gets a compliment", "has to walk home", "makes new friends"],
         "xIntent": ["to help PersonY", "to learn something new", "to feel at home"],
         "HinderedBy": ["PersonX has no time", "the weather is bad", "PersonX is too nervous"]}
VAGUE_TAILS = ["something", "none", "to do it", "it happens"]


def _reply(rng: random.Random, topic: str, specific: float) -> str:
    return rng.choice(SPECIFIC).format(t=topic) if rng.random() < specific else rng.choice(GENERIC)


def reddit_rows(rng: random.Random, n: int, specific: float, start: int) -> list[dict]:
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        parent = f"Anyone else have thoughts on {topic}? {rng.choice(OPINIONS).capitalize()}."
        score = rng.randint(66, 400) if specific > 0.5 else -rng.randint(6, 60)
        rows.append({"id": f"c{start + i}", "prompt_or_input_text": parent + EOS,
                     "references": _reply(rng, topic, specific) + EOS,
                     "meta_data": {"score": score, "parent_score": rng.randint(1, 500)}})
    return rows


def wow_rows(rng: random.Random, n: int, start: int) -> list[dict]:
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        knowledge = rng.choice(KNOWLEDGE).format(t=topic)
        history = [rng.choice(QUESTIONS).format(t=topic)]
        if rng.random() < 0.5:  # two more turns: the wizard's earlier reply and the apprentice's follow-up
            history += [rng.choice(SPECIFIC).format(t=topic), rng.choice(FOLLOW_UPS)]
        if rng.random() < 0.25:  # the wizard opened the dialogue
            history.insert(0, f"I have been reading about {topic} lately.")
        response = f"{knowledge} {rng.choice(OPINIONS).capitalize()}." if rng.random() < 0.6 else rng.choice(GENERIC)
        rows.append({"id": start + i, "prompt_or_input_text": f"Knowledge: {knowledge}{EOS}{EOS.join(history)}{EOS}",
                     "references": response + EOS, "meta_data": {"knowledge": knowledge, "history": EOS.join(history)}})
    return rows


def comet_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        head, relation = rng.choice(EVENTS), rng.choice(sorted(TAILS))
        tail = rng.choice(TAILS[relation]) if rng.random() < 0.7 else rng.choice(VAGUE_TAILS)
        rows.append({"prompt_or_input_text": comet_prompt(head, relation) + " ", "references": tail,
                     "meta_data": {"head": head, "relation": relation}})
    return rows


def rewarded(rows: list[dict], tfidf: TfIdf) -> list[dict]:
    for row in rows:
        value = round(tfidf.response_score(row["references"]), 6)
        row["reward_components"] = {"tfidf": value, "final_reward": value}
    return rows


def write_samples(out: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    for folder in ("alol_reddit", "alol_wow", "alol_comet"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    pos, neg = reddit_rows(rng, 32, 0.8, 0), reddit_rows(rng, 32, 0.2, 100)
    val = reddit_rows(rng, 12, 0.8, 200) + reddit_rows(rng, 12, 0.2, 300)
    fits = {"pos_train": TfIdf([r["references"] for r in pos]), "neg_train": TfIdf([r["references"] for r in neg])}
    for name, rows in (("pos_train", pos), ("neg_train", neg), ("val", val)):
        write_jsonl(out / "alol_reddit" / f"{name}.jsonl", rewarded(rows, fits.get(name, fits["pos_train"])))
    train, val = wow_rows(rng, 48, 0), wow_rows(rng, 24, 1000)
    tfidf = TfIdf([r["references"] for r in train])
    for name, rows in (("train", train), ("val", val)):
        write_jsonl(out / "alol_wow" / f"{name}.jsonl", rewarded(rows, tfidf))
    train, val = comet_rows(rng, 48), comet_rows(rng, 48)
    tfidf = TfIdf([r["references"] for r in train])
    for name, rows in (("train", train), ("val", val)):
        write_jsonl(out / "alol_comet" / f"{name}.jsonl", rewarded(rows, tfidf))


if __name__ == "__main__":
    write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "data/samples"))
