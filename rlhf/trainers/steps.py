"""Forward passes that turn a batch into an algorithm's loss inputs, one per batch kind.

The loop picks one by `algo.batch_kind`; the algorithm itself only sees tensors.
"""

from collections.abc import Callable

from torch import Tensor
from transformers import PreTrainedModel

from rlhf.data.batch import PairBatch, SequenceBatch
from rlhf.models.logprobs import sequence_logps, token_logprobs

RefLogps = tuple[Tensor, Tensor] | None  # reference (chosen, rejected) sequence log-probs, (B,) each


def sequence_step(algo, model: PreTrainedModel, batch: SequenceBatch, ref: RefLogps) -> tuple[Tensor, dict]:
    logprobs = token_logprobs(model, batch)  # (B, T-1)
    return algo.loss(logprobs=logprobs, response_mask=batch.response_mask[:, 1:])


def pair_step(algo, model: PreTrainedModel, batch: PairBatch, ref: RefLogps) -> tuple[Tensor, dict]:
    B = batch.index.shape[0]
    logps, lengths = sequence_logps(model, batch.concatenated())  # (2B,) each: chosen rows first
    return algo.loss(
        chosen_logps=logps[:B],
        rejected_logps=logps[B:],
        ref_chosen_logps=None if ref is None else ref[0],
        ref_rejected_logps=None if ref is None else ref[1],
        chosen_lengths=lengths[:B],
        rejected_lengths=lengths[B:],
    )


STEPS: dict[str, Callable] = {"sequence": sequence_step, "pair": pair_step}
