"""D2PO's live discriminator (Singhal et al. 2024, "D2PO: Discriminator-Guided DPO with Response Evaluation
Models", arXiv 2405.01511; code PrasannS/d2po, `src/rmapi.py`): a reward model that labels the policy's
pairs while the policy trains, spends a small budget of gold labels on the pairs it is least sure of, and
learns from them. In one process with the policy (D2PO's code runs it as a separate HTTP server), its whole
state checkpointed with the run.

Per call, with the pairs (a, b) of an online update (`label`):
1. the discriminator scores both sides, r_a and r_b;
2. the window's remaining budget of gold labels (`relabels` per window of `window` pairs) is spent on the
   pairs `criteria` picks: "conf", the smallest |r_a - r_b| first, or "rand" (`rlhf.algos.d2po`);
3. those pairs' scores are reordered to agree with gold (the larger score goes to the gold winner); a pair
   whose gold scores tie (or cannot be had) is skipped, counted;
4. the gold-labelled pairs join the discriminator's training set; once a window's budget is spent (from the
   second window on: D2PO's `rmready`), the discriminator trains `update_epochs` epochs on the whole set,
   Bradley-Terry, at its own learning rate, once per window;
5. the policy's pairs are ordered by the returned scores (silver labels, gold where asked).
`max_labels` stops asking for gold (and updating) once that many labels were used: D2PO's `stopupdates`,
and what makes runs with equal gold-label budgets comparable.
"""

import math

import torch
from torch import Tensor

from rlhf.algos.d2po import CRITERIA, RelabelBudget, relabelled_scores, select_relabels
from rlhf.algos.reward_model import BradleyTerry
from rlhf.data.batch import collate_pairs, collate_sequences
from rlhf.data.tokenize import TokenizedSequence
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward, score_checked
from rlhf.trainers.steps import reward_outputs


class Discriminator:
    """model: a reward model with one head (`policy=tiny_rm|hf_rm`'s loaders, LoRA included), initialised from
    a trained one (`path=` a run of `rlhf-train algo=rm`) or from the policy's weights.
    window: policy pairs per window (D2PO's SAMPN = 256 texts = 128 pairs); relabels: gold labels per window
    (RELABELS = 16); update_epochs (UEPOCHS = 4), learning_rate (ULR = 1e-4), batch_size (APBSIZE = 16).
    """

    def __init__(self, model: Policy, window: int = 128, relabels: int = 16, criteria: str = "conf",
                 update_epochs: int = 4, learning_rate: float = 1e-4, batch_size: int = 16, max_length: int = 512,
                 max_labels: int | None = None, seed: int = 0):
        if criteria not in CRITERIA:
            raise ValueError(f"discriminator.criteria={criteria!r} is not one of {CRITERIA}")
        for name, value in (("window", window), ("update_epochs", update_epochs), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"discriminator.{name}={value} must be >= 1")
        if max_labels is not None and max_labels < 0:
            raise ValueError(f"discriminator.max_labels={max_labels} must be >= 0 or null")
        self.model, self.tokenizer = model.model, model.tokenizer
        self.window, self.criteria, self.update_epochs, self.batch_size = window, criteria, update_epochs, batch_size
        self.max_labels, self.max_length = max_labels, max_length
        self.budget = RelabelBudget(relabels)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=learning_rate)
        self.generator = torch.Generator().manual_seed(seed)
        self.pairs: list[tuple[list[dict], list[dict]]] = []  # gold-labelled (winner, loser) conversations
        self.seen, self.ready, self.updated, self.labels, self.updates = 0, False, False, 0, 0
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> "Discriminator":
        self.model.to(device)
        self.device = device
        return self

    # --- scoring and training -------------------------------------------------------------------------

    def _sequence(self, conversation: list[dict]) -> TokenizedSequence:
        """The conversation's chat-template ids, the last `max_length` (what `algo=rm` trains reward models on)."""
        ids = self.tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)[-self.max_length:]
        return TokenizedSequence(ids, [0] * len(ids))

    @torch.no_grad()
    def scores(self, conversations: list[list[dict]]) -> Tensor:
        """(N,) the discriminator's reward of each conversation (its last assistant turn in context)."""
        self.model.eval()
        out = []
        for start in range(0, len(conversations), self.batch_size):
            sequences = [self._sequence(c) for c in conversations[start:start + self.batch_size]]
            batch = collate_sequences(sequences, list(range(len(sequences))), self.tokenizer.pad_token_id).to(self.device)
            out.append(self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def train(self) -> float:
        """`update_epochs` epochs of Bradley-Terry on the gold-labelled pairs; returns the last epoch's loss."""
        self.model.train()
        loss_fn, items = BradleyTerry(), [(self._sequence(w), self._sequence(lo)) for w, lo in self.pairs]
        mean = math.nan
        for _ in range(self.update_epochs):
            order = torch.randperm(len(items), generator=self.generator).tolist()
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                positions = order[start:start + self.batch_size]
                batch = collate_pairs([items[i] for i in positions], positions, self.tokenizer.pad_token_id).to(self.device)
                loss, _ = loss_fn.loss(**reward_outputs(self.model, batch, 1.0))
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad()
                total += float(loss.detach()) * len(positions)
            mean = total / len(order)
        self.model.eval()
        self.updates += 1
        return mean

    # --- labelling an update's pairs --------------------------------------------------------------------

    def label(self, first: list[list[dict]], second: list[list[dict]], fields: list[dict],
              gold: Reward) -> tuple[list[float], list[float], dict[str, float]]:
        """The scores of both sides of each pair (steps 1-5 of the module docstring), and the call's metrics:
        gold labels used so far, the discriminator's accuracy on this call's gold pairs before any update
        (NaN without one), its updates and training pairs so far."""
        ra, rb = self.scores(first), self.scores(second)
        n = len(first)
        left = None if self.max_labels is None else max(self.max_labels - self.labels, 0)
        wanted = min(n, self.budget.remaining) if left is None else min(n, self.budget.remaining, left)
        selected = select_relabels(ra, rb, self.budget.take(wanted), self.criteria, self.generator)
        gold_a, gold_b = torch.zeros(n), torch.zeros(n)  # equal (a tie: not used) where gold is not asked
        metrics = {"d2po/gold_invalid": 0.0, "d2po/gold_ties": 0.0}
        if len(selected):
            picked = selected.tolist()
            both = score_checked(gold, [first[i] for i in picked] + [second[i] for i in picked],
                                 [fields[i] for i in picked] * 2)
            for k, i in enumerate(picked):
                a, b = both[k], both[len(picked) + k]
                if isinstance(a, Invalid) or isinstance(b, Invalid):
                    metrics["d2po/gold_invalid"] += 1
                    continue
                gold_a[i], gold_b[i] = a, b
                metrics["d2po/gold_ties"] += a == b
        self.labels += len(selected)
        scores_a, scores_b, used = relabelled_scores(ra, rb, gold_a, gold_b, selected)
        agree = torch.sign(ra - rb) == torch.sign(gold_a - gold_b)
        metrics["d2po/accuracy"] = float(agree[used].float().mean()) if bool(used.any()) else math.nan
        self.pairs += [(first[i], second[i]) if gold_a[i] > gold_b[i] else (second[i], first[i])
                       for i in used.nonzero().flatten().tolist()]
        self.seen += n
        if self.ready and self.budget.remaining == 0 and not self.updated and wanted and self.pairs:
            metrics["d2po/update_loss"] = self.train()
            self.updated = True
        if self.seen >= self.window:  # the window is full: D2PO's buffer reset
            self.seen, self.ready, self.updated = 0, True, False
            self.budget.reset()
        metrics |= {"d2po/gold_labels": float(self.labels), "d2po/updates": float(self.updates),
                    "d2po/train_pairs": float(len(self.pairs))}
        return scores_a.tolist(), scores_b.tolist(), metrics

    # --- checkpointing (the online loop registers the discriminator with its checkpoints) ---------------

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "pairs": self.pairs,
                "budget": self.budget.state_dict(), "generator": self.generator.get_state(),
                "counters": {"seen": self.seen, "ready": self.ready, "updated": self.updated,
                             "labels": self.labels, "updates": self.updates}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pairs = [(list(w), list(lo)) for w, lo in state["pairs"]]
        self.budget.load_state_dict(state["budget"])
        self.generator.set_state(state["generator"])
        counters = state["counters"]
        self.seen, self.ready, self.updated = counters["seen"], counters["ready"], counters["updated"]
        self.labels, self.updates = counters["labels"], counters["updates"]
