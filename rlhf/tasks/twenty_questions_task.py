"""`task=twenty_questions`: the LMRL-Gym game as dialogues between the policy (the asker) and a user
simulator that knows the hidden object (the oracle: `user=twenty_questions_kb`, or an LLM).

Each dialogue opens with one user message inviting the policy to play (the opening of the
`aditi-bhaskar/multiturn-20q` conversion of the benchmark) and carries the fields `object` (canonical
name) and `names` (accepted names). The policy asks up to 20 questions; the oracle answers each, the last
one included; the dialogue is done once a question guesses the object and the oracle says "Yes.".
"""

import json
from pathlib import Path

from rlhf.tasks.twenty_questions import (DATA_DIR, MAX_QUESTIONS, OBJECTS_PATH, guessed, load_objects,
                                         postprocess_question)

EVAL_GAMES_PATH = DATA_DIR / "twenty_questions" / "lmrl_eval_games.json"
OPENING = "Let's play 20 questions! I will answer yes or no to help you guess the object I'm thinking of."


class TwentyQuestionsTask:
    """Games of Twenty Questions.

    Splits: "train" plays each object of `objects_path` once, in file order; "eval" plays the hidden
    objects of the benchmark's 1000 recorded evaluation games (`eval_games_path`), in their order (they are
    objects of the same list, as in LMRL-Gym). Evaluation plays the first `num_eval_prompts` of them.
    """

    name = "twenty_questions"
    reply_to_last = True

    def __init__(self, objects_path: str | Path = OBJECTS_PATH, eval_games_path: str | Path = EVAL_GAMES_PATH,
                 opening: str = OPENING, system_prompt: str | None = None, max_turns: int = MAX_QUESTIONS,
                 num_eval_prompts: int = 64):
        objects, _ = load_objects(objects_path)
        self.names = {names[0]: names for names in objects}
        games = json.loads(Path(eval_games_path).read_text())
        self.eval_objects = [game["word"][0] for game in games]
        unknown = sorted(set(self.eval_objects) - set(self.names))
        if unknown:
            raise ValueError(f"{eval_games_path}: games hide objects missing from {objects_path}: {unknown[:5]}")
        self.opening, self.system_prompt, self.max_turns = opening, system_prompt, max_turns
        self.num_eval_prompts = num_eval_prompts

    def openings(self, split: str, limit: int | None = None) -> tuple[list[list[dict]], list[dict]]:
        if split not in ("train", "eval"):
            raise ValueError(f"task twenty_questions has splits 'train' and 'eval', not {split!r}")
        objects = list(self.names) if split == "train" else self.eval_objects
        objects = objects[:limit] if limit is not None else objects
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        opening = system + [{"role": "user", "content": self.opening}]
        return [list(opening) for _ in objects], [{"object": o, "names": self.names[o]} for o in objects]

    def eval_openings(self) -> tuple[list[list[dict]], list[dict]]:
        return self.openings("eval", self.num_eval_prompts)

    def done(self, conversation: list[dict], fields: dict) -> bool:
        """The latest question guessed the object and was answered "Yes."."""
        question, answer = conversation[-2]["content"], conversation[-1]["content"]
        question = postprocess_question(question)
        return question is not None and guessed(question, answer.strip(), fields["names"])

    def dialogue_metrics(self, messages: list[dict], fields: dict) -> dict[str, float]:
        """success (1 if some question guessed the object and got "Yes."), questions asked (up to the guess),
        and the LMRL-Gym return: -1 per question, the guessing question free."""
        questions = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            questions += 1
            if i + 1 < len(messages) and self.done(messages[: i + 2], fields):
                return {"success": 1.0, "questions": float(questions), "return": float(1 - questions)}
        return {"success": 0.0, "questions": float(questions), "return": float(-questions)}
