"""Rewards from sequence classifiers: published reward models and classifiers, or one trained here.

`SequenceClassifierReward` loads any `AutoModelForSequenceClassification` by hub id or local path and scores
the last assistant message of each conversation. `format` says how a conversation becomes the model's input
text (each format is a pure function below, named `format_<name>`); `transform` turns the logits into the
score. The formats follow the published usage of the models configured in `conf/reward/`:

- `chat_template`: the tokenizer's chat template over the whole conversation (ArmoRM, FsfairX, reward models
  trained with `rlhf-train algo=rm`), tokenised without adding special tokens again (the template has them);
- `question_answer`: "Question: {q}\\n\\nAnswer: {r}" (D2PO's `qaform`, single-turn);
- `human_assistant`: Anthropic HH's transcript "\\n\\nHuman: ...\\n\\nAssistant: ..." (the format of the
  Anthropic/hh-rlhf data that Ray2333's GPT-2 harmless / helpful RMs were trained on);
- `oasst`: "<|prompter|>{user}{eos}<|assistant|>{reply}{eos}..." (A-LoL `metrics_hh.py::create_reward_fn_3`
  for OpenAssistant/oasst-rm-2.1-pythia-1.4b-epoch-2.5: `"".join(turn + eos for turn in turns)`);
- `dialogrpt`: the turns joined by the eos token, "{context}{eos}{context}{eos}{response}" (DialogRPT; A-LoL
  scores `f"{history}{response}"` where each history turn ends with eos);
- `text_pair`: a (field, response) text pair, e.g. FaithCritic's (knowledge, response) from `fields`;
- `knowledge_pair`: (knowledge, response) with the knowledge from the conversation's system message
  "Knowledge: ..." (A-LoL's WoW / FaithDial rows as `task.format: alol_rewarded` reads them), without the
  "Knowledge:" label and anything after its first blank line;
- `response_only`: the response alone (CoLA fluency, IMDb sentiment).
"""

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from rlhf.models.policy import DTYPES, check_dtype
from rlhf.rewards.base import Score

FORMATS = ("chat_template", "question_answer", "human_assistant", "oasst", "dialogrpt", "text_pair",
           "knowledge_pair", "response_only")
TRANSFORMS = ("raw", "sigmoid", "softmax", "tanh")
TRUNCATION_SIDES = ("left", "right")
ModelInput = str | tuple[str, str]


def dialogue(
    conversation: list[dict], format_name: str, roles: tuple[str, ...] = ("user", "assistant")
) -> list[dict]:
    """The conversation up to and including its last assistant message (the response a reward scores).
    Messages after it are not part of what is scored. Raises if a message has a role the format cannot
    write, or if there is no assistant message."""
    last = max((i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError(f"reward format {format_name!r}: conversation has no assistant message to score")
    kept = conversation[: last + 1]
    for i, message in enumerate(kept):
        if message["role"] not in roles:
            raise ValueError(f"reward format {format_name!r} writes only roles {list(roles)}; "
                             f"message {i} has role {message['role']!r}")
    return kept


def format_question_answer(conversation: list[dict]) -> str:
    """D2PO's `qaform(q, r) = "Question: " + q + "\\n\\nAnswer: " + r` for a single-turn conversation."""
    kept = dialogue(conversation, "question_answer")
    if len(kept) != 2:
        raise ValueError(f"reward format 'question_answer' scores single-turn conversations (one user "
                         f"message then the response); got {len(kept)} messages up to the response")
    return f"Question: {kept[0]['content']}\n\nAnswer: {kept[1]['content']}"


def format_human_assistant(conversation: list[dict]) -> str:
    """Anthropic HH's transcript format: "\\n\\nHuman: {user}\\n\\nAssistant: {reply}" for every turn."""
    names = {"user": "Human", "assistant": "Assistant"}
    turns = dialogue(conversation, "human_assistant")
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in turns)


def format_oasst(conversation: list[dict], eos_token: str) -> str:
    """OpenAssistant's format: each turn is its marker (<|prompter|> / <|assistant|>), its text, then eos."""
    markers = {"user": "<|prompter|>", "assistant": "<|assistant|>"}
    return "".join(f"{markers[m['role']]}{m['content']}{eos_token}" for m in dialogue(conversation, "oasst"))


def format_dialogrpt(conversation: list[dict], eos_token: str) -> str:
    """DialogRPT's format: context turns and the response joined by eos, no eos after the response.

    A-LoL's stored Reddit training rewards were computed on responses that end with an eos; its generated
    responses are decoded without one and scored as here."""
    return eos_token.join(m["content"] for m in dialogue(conversation, "dialogrpt"))


def format_response_only(conversation: list[dict]) -> str:
    """The response (last assistant message) alone."""
    return dialogue(conversation, "response_only", roles=("system", "user", "assistant"))[-1]["content"]


def format_text_pair(conversation: list[dict], fields: dict, field: str) -> tuple[str, str]:
    """(fields[field], response): e.g. FaithCritic's (knowledge, response) pair."""
    if field not in fields:
        raise ValueError(f"reward format 'text_pair' needs the field {field!r}; the conversation's fields "
                         f"have {sorted(fields)}")
    if not isinstance(fields[field], str):
        raise ValueError(f"reward format 'text_pair': field {field!r} must be a string, got "
                         f"{type(fields[field]).__name__}")
    return fields[field], format_response_only(conversation)


def format_knowledge_pair(conversation: list[dict]) -> tuple[str, str]:
    """(knowledge, response), the knowledge from a system message "Knowledge: ..." (see the module docstring)."""
    system = conversation[0]["content"] if conversation and conversation[0]["role"] == "system" else ""
    if not system.startswith("Knowledge:"):
        raise ValueError("reward format 'knowledge_pair' needs a conversation that opens with a system message "
                         f"'Knowledge: ...'; this one opens with {conversation[0]['role'] if conversation else 'nothing'}"
                         f"{': ' + repr(system[:40]) if system else ''}")
    return system.removeprefix("Knowledge:").split("\n\n")[0].strip(), format_response_only(conversation)


def format_chat_template(conversation: list[dict], tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template over the conversation up to the response (no generation prompt)."""
    kept = dialogue(conversation, "chat_template", roles=("system", "user", "assistant"))
    return tokenizer.apply_chat_template(kept, tokenize=False, add_generation_prompt=False)


def transform_logits(logits: torch.Tensor, transform: str, label: int) -> torch.Tensor:
    """(N, C) logits -> (N,) scores: logit `label` as is ("raw"), through sigmoid or tanh, or the softmax
    probability of class `label` over the C classes."""
    if label >= logits.shape[1]:
        raise ValueError(f"reward label index {label} is out of range: the model gives {logits.shape[1]} "
                         "logits")
    if transform == "softmax":
        return torch.softmax(logits, dim=-1)[:, label]
    column = logits[:, label]
    if transform == "sigmoid":
        return torch.sigmoid(column)
    if transform == "tanh":
        return torch.tanh(column)
    return column


def resolve_device(device: str | None) -> torch.device:
    """`device`, or cuda when available and cpu otherwise."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, truncation_side: str, batch_size: int, pad_token: str | None,
    where: str,
) -> None:
    """Set the truncation side and right padding, and `pad_token` when given. A batch of several
    conversations needs a pad token: a tokenizer with none scores one conversation per forward, unless
    `pad_token` names one (e.g. the eos token, as published GPT-2 reward model code does)."""
    if truncation_side not in TRUNCATION_SIDES:
        raise ValueError(f"{where}.truncation_side={truncation_side!r} is not one of {TRUNCATION_SIDES}")
    if batch_size < 1:
        raise ValueError(f"{where}.batch_size={batch_size} must be >= 1")
    tokenizer.truncation_side = truncation_side
    tokenizer.padding_side = "right"
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    if batch_size > 1 and tokenizer.pad_token_id is None:
        raise ValueError(f"{where}.batch_size={batch_size} needs a pad token and the tokenizer of "
                         f"{tokenizer.name_or_path!r} has none: set {where}.pad_token (e.g. its eos token "
                         f"{tokenizer.eos_token!r}) or {where}.batch_size=1")


def align_pad_id(model_config, tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    """Sequence classifiers with a causal backbone score the last token that is not `config.pad_token_id`:
    give the model the tokenizer's pad id when it has none, and refuse a different one (the model would
    score a pad token)."""
    if model_config.pad_token_id is None:
        model_config.pad_token_id = tokenizer.pad_token_id
    elif model_config.pad_token_id != tokenizer.pad_token_id:
        model_pad = model_config.pad_token_id
        raise ValueError(f"the model at {tokenizer.name_or_path!r} finds the last token by pad id "
                         f"{model_pad} but its tokenizer pads with {tokenizer.pad_token_id}: set "
                         f"{where}.pad_token to the token of id {model_pad} or {where}.batch_size=1")


@torch.inference_mode()
def classifier_logits(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, inputs: list[ModelInput], batch_size: int,
    max_length: int, add_special_tokens: bool, device: torch.device,
) -> torch.Tensor:
    """(N, C) float32 logits of the model on `inputs` (texts or text pairs), `batch_size` at a time, right
    padded and truncated to `max_length` tokens on the tokenizer's truncation side."""
    chunks = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        pairs = isinstance(batch[0], tuple)
        encoded = tokenizer(
            [b[0] for b in batch] if pairs else batch,
            [b[1] for b in batch] if pairs else None,
            padding=len(batch) > 1, truncation=True, max_length=max_length,
            add_special_tokens=add_special_tokens, return_tensors="pt",
        ).to(device)
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        logits = logits.float().cpu()
        # ArmoRM's remote code returns its (B,) preference score as `.logits`
        chunks.append(logits[:, None] if logits.dim() == 1 else logits)
    return torch.cat(chunks)  # (N, C)


class SequenceClassifierReward:
    """Score of a sequence classifier on each formatted conversation: `transform(logits)[label]`.

    path: hub id or local directory of an `AutoModelForSequenceClassification` and its tokenizer.
    format: one of FORMATS (module docstring). `pair_field` names the field of `text_pair`.
    transform: "raw" logit, "sigmoid", "tanh", or "softmax" probability of class `label`.
    label: class index, or a label name looked up in the model's `config.label2id`.
    max_length / truncation_side: longest input in tokens; "left" drops the start (keeps the response).
    batch_size: conversations per forward; > 1 needs a pad token (`pad_token` sets one).
    dtype / device: weights dtype ("float32", "bfloat16", "float16"); device (None: cuda when available).
    trust_remote_code: run the model repository's own code (only for models that need it, e.g. ArmoRM).
    """

    def __init__(
        self,
        path: str,
        format: str,
        transform: str = "raw",
        label: int | str = 0,
        pair_field: str | None = None,
        max_length: int = 512,
        truncation_side: str = "left",
        batch_size: int = 8,
        dtype: str = "float32",
        device: str | None = None,
        pad_token: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"reward.format={format!r} is not one of {FORMATS}")
        if (format == "text_pair") != (pair_field is not None):
            raise ValueError(f"reward.pair_field is required by format 'text_pair' and only by it "
                             f"(format={format!r}, pair_field={pair_field!r})")
        if transform not in TRANSFORMS:
            raise ValueError(f"reward.transform={transform!r} is not one of {TRANSFORMS}")
        check_dtype(dtype, "reward.dtype")
        if max_length < 2:
            raise ValueError(f"reward.max_length={max_length} must be at least 2")
        self.path, self.format, self.transform, self.pair_field = path, format, transform, pair_field
        self.max_length, self.batch_size = max_length, batch_size
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, revision=revision, trust_remote_code=trust_remote_code
        )
        if format == "chat_template" and self.tokenizer.chat_template is None:
            raise ValueError(f"reward.format='chat_template' but the tokenizer of {path!r} has no chat "
                             "template")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, revision=revision, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
        ).to(self.device).eval()
        prepare_tokenizer(self.tokenizer, truncation_side, batch_size, pad_token, "reward")
        if batch_size > 1:
            align_pad_id(self.model.config, self.tokenizer, "reward")
        self.label = self._label_index(label)
        if transform == "softmax" and self.model.config.num_labels < 2:
            raise ValueError(f"reward.transform='softmax' needs a classifier with >= 2 labels; {path!r} has "
                             f"{self.model.config.num_labels}")

    def _label_index(self, label: int | str) -> int:
        if isinstance(label, int):
            return label
        label2id = self.model.config.label2id
        if label not in label2id:
            raise ValueError(f"reward.label={label!r} is not a label of {self.path!r} "
                             f"(labels: {sorted(label2id)})")
        return label2id[label]

    def inputs(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[ModelInput]:
        """The model input (text, or text pair) of each conversation."""
        eos = self.tokenizer.eos_token
        if self.format == "text_pair":
            if fields is None:
                raise ValueError(f"reward format 'text_pair' needs fields with {self.pair_field!r}; none "
                                 "were given")
            pairs = zip(conversations, fields, strict=True)
            return [format_text_pair(c, f, self.pair_field) for c, f in pairs]
        write = {
            "chat_template": lambda c: format_chat_template(c, self.tokenizer),
            "question_answer": format_question_answer,
            "human_assistant": format_human_assistant,
            "oasst": lambda c: format_oasst(c, eos),
            "dialogrpt": lambda c: format_dialogrpt(c, eos),
            "response_only": format_response_only,
            "knowledge_pair": format_knowledge_pair,
        }[self.format]
        return [write(c) for c in conversations]

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        if not conversations:
            return []
        logits = classifier_logits(
            self.model, self.tokenizer, self.inputs(conversations, fields), self.batch_size, self.max_length,
            add_special_tokens=self.format != "chat_template", device=self.device,
        )
        return transform_logits(logits, self.transform, self.label).tolist()
