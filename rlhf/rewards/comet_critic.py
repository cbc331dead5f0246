"""The COMET critic: the probability that a generated ATOMIC-10x triple (head, relation, tail) is valid.

The critic is the purification classifier of Symbolic Knowledge Distillation (West et al. 2022), the reward of
A-LoL's COMET task. Its PyTorch form has two parts in one directory (hub id or local path):
- a RoBERTa encoder with its pooler (`RobertaModel`) and its tokenizer;
- a head `custom_roberta_classification_head.pt`, a state dict of `dense` (hidden -> 512) and `out_proj`
  (512 -> 1), applied as sigmoid(out_proj(gelu(dense(pooler_output)))).

The critic reads a text pair: the head, then the relation's phrase followed by the tail, with PersonX and
PersonY replaced by first names, e.g. ("Alex goes to the store", "as a result, Alex wants to buy milk").
The published scorer draws the two names at random for every triple. Here they are fixed (`names`), so that
a triple always gets the same score.

The policy's prompt is COMET's "<head> {head} </head> <relation> {relation} </relation> [GEN]" and its reply
is the tail. The head and the relation are read back from the last user message, so that no dataset field is
needed.
"""

import re

import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import cached_file

from rlhf.models.policy import DTYPES, check_dtype
from rlhf.rewards.base import Score, last_response
from rlhf.rewards.reward_model import prepare_tokenizer, resolve_device

# ATOMIC-10x's relations and the phrase the critic reads in front of the tail
RELATIONS = {
    "HinderedBy": "can be hindered by",
    "xNeed": "but before, PersonX needed",
    "xWant": "as a result, PersonX wants",
    "xIntent": "because PersonX wanted",
    "xReact": "as a result, PersonX feels",
    "xAttr": "so, PersonX is seen as",
    "xEffect": "as a result, PersonX",
}
PROMPT = re.compile(r"<head>\s*(?P<head>.*?)\s*</head>\s*<relation>\s*(?P<relation>\S+)\s*</relation>\s*\[GEN\]",
                    re.DOTALL)
HEAD_FILE = "custom_roberta_classification_head.pt"


def comet_prompt(head: str, relation: str) -> str:
    """The policy's prompt for a (head, relation): what `parse_prompt` reads back."""
    return f"<head> {head} </head> <relation> {relation} </relation> [GEN]"


def parse_prompt(text: str) -> tuple[str, str]:
    """(head, relation) of a COMET prompt; raises naming what is missing or unknown."""
    match = PROMPT.search(text)
    if match is None:
        raise ValueError("the COMET critic scores replies to prompts '<head> ... </head> <relation> ... "
                         f"</relation> [GEN]'; this prompt is {text[:80]!r}")
    relation = match["relation"]
    if relation not in RELATIONS:
        raise ValueError(f"the COMET critic knows the relations {sorted(RELATIONS)}; the prompt has "
                         f"{relation!r}")
    return match["head"], relation


def critic_pair(head: str, relation: str, tail: str, names: tuple[str, str]) -> tuple[str, str]:
    """The critic's text pair (head, "relation phrase tail"), PersonX and PersonY replaced by `names`."""
    def named(text: str) -> str:
        return text.replace("PersonX", names[0]).replace("PersonY", names[1])
    return named(head), named(f"{RELATIONS[relation]} {tail.strip()}")


class CriticHead(torch.nn.Module):
    """dense (hidden -> middle), gelu, out_proj (middle -> 1), sigmoid: the converted critic's head."""

    def __init__(self, hidden_size: int, middle_size: int) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(hidden_size, middle_size)
        self.out_proj = torch.nn.Linear(middle_size, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out_proj(torch.nn.functional.gelu(self.dense(pooled)))).squeeze(-1)


def load_head(path: str, head_file: str, hidden_size: int, middle_size: int, revision: str | None) -> CriticHead:
    """The head's state dict from `head_file` in `path` (a tensors-only load: no pickled code runs)."""
    file = cached_file(path, head_file, revision=revision, _raise_exceptions_for_missing_entries=False)
    if file is None:
        raise FileNotFoundError(f"reward.head_file: {head_file!r} is not in {path!r}; the COMET critic needs "
                                "the converted classification head next to its RoBERTa encoder")
    state = torch.load(file, map_location="cpu", weights_only=True)
    head = CriticHead(hidden_size, middle_size)
    expected = {name: tuple(p.shape) for name, p in head.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        raise ValueError(f"{file}: the critic head for hidden size {hidden_size} and reward.middle_size="
                         f"{middle_size} has tensors {expected}; the file has {found}")
    head.load_state_dict(state)
    return head


class CometCriticReward:
    """P(valid) of each (head, relation, reply-as-tail) under the COMET critic (module docstring).

    path: directory or hub id of the encoder, its tokenizer and `head_file`.
    names: the first names that replace PersonX and PersonY.
    max_length / batch_size / dtype / device: as for the sequence-classifier rewards.
    """

    def __init__(
        self,
        path: str,
        head_file: str = HEAD_FILE,
        middle_size: int = 512,
        names: tuple[str, str] | list[str] = ("Alex", "Jordan"),
        max_length: int = 128,
        batch_size: int = 32,
        dtype: str = "float32",
        device: str | None = None,
        revision: str | None = None,
    ) -> None:
        names = tuple(names)
        if len(names) != 2 or names[0] == names[1] or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"reward.names={list(names)} must be two different first names (PersonX, PersonY)")
        check_dtype(dtype, "reward.dtype")
        self.names, self.max_length, self.batch_size = names, max_length, batch_size
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        prepare_tokenizer(self.tokenizer, "right", batch_size, None, "reward")
        self.encoder = AutoModel.from_pretrained(path, revision=revision, dtype=DTYPES[dtype])
        if not hasattr(self.encoder, "pooler") or self.encoder.pooler is None:
            raise ValueError(f"reward.path={path!r}: the COMET critic reads the encoder's pooler output, and "
                             f"this {type(self.encoder).__name__} has no pooler")
        self.encoder = self.encoder.to(self.device).eval()
        self.head = load_head(path, head_file, self.encoder.config.hidden_size, middle_size, revision)
        self.head = self.head.to(self.device, DTYPES[dtype]).eval()

    def pairs(self, conversations: list[list[dict]]) -> list[tuple[str, str]]:
        """The critic's text pair of each conversation: the last user message's (head, relation) and the reply."""
        out = []
        for i, conversation in enumerate(conversations):
            prompt = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), None)
            if prompt is None:
                raise ValueError(f"conversation {i} has no user message with a COMET prompt")
            try:
                head, relation = parse_prompt(prompt)
            except ValueError as err:
                raise ValueError(f"conversation {i}: {err}") from None
            out.append(critic_pair(head, relation, last_response(conversation), self.names))
        return out

    @torch.inference_mode()
    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        pairs = self.pairs(conversations)
        scores: list[Score] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            encoded = self.tokenizer([p[0] for p in batch], [p[1] for p in batch], padding=len(batch) > 1,
                                     truncation=True, max_length=self.max_length, return_tensors="pt")
            encoded = encoded.to(self.device)
            pooled = self.encoder(input_ids=encoded["input_ids"],
                                  attention_mask=encoded["attention_mask"]).pooler_output
            scores.extend(self.head(pooled).float().cpu().tolist())
        return scores
