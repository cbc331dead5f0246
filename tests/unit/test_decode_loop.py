"""backend.decode=loop against model.generate: the same ids for the same seed, sampled and greedy, with
padding, min_new_tokens, top-k / top-p, kept caches; inverse_cdf draws the right distribution."""

import logging

import pytest
import torch

from rlhf.backends.decode import inverse_cdf
from rlhf.backends.hf import HFBackend
from rlhf.models.policy import load_policy
from rlhf.models.value_model import PolicyWithValueHead

CONVERSATIONS = [
    [{"role": "user", "content": "Why would someone want a ocean?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Tell me about the tree."},
     {"role": "assistant", "content": "Happy to help: the tree is tall."},
     {"role": "user", "content": "Can you give another detail about the box?"}],
]


@pytest.fixture(scope="module")
def policy(tiny_path):
    return load_policy(tiny_path)


def both(policy, **settings):
    loop = HFBackend(policy.model, policy.tokenizer, decode="loop", draw="multinomial", **settings)
    generate = HFBackend(policy.model, policy.tokenizer, decode="generate", **settings)
    assert loop.decode_loop and not generate.decode_loop
    return loop, generate


@pytest.mark.parametrize("settings", [
    dict(temperature=1.0, max_new_tokens=12),
    dict(temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=12, min_new_tokens=5),
    dict(temperature=0.0, max_new_tokens=9),
])
def test_loop_samples_generates_ids(policy, settings):
    loop, generate = both(policy, seed=3, **settings)
    for _ in range(2):  # successive calls under successive seeds
        ours, theirs = loop.generate(CONVERSATIONS, num_samples=3), generate.generate(CONVERSATIONS, num_samples=3)
        assert ours == theirs
    lengths = {len(c.token_ids) for samples in ours for c in samples}
    assert min(lengths) >= settings.get("min_new_tokens", 1)


def test_rows_that_end_early_match_generate(policy):
    """A frequent sampled id made a second eos id, so rows end at different steps (finished rows get pads)."""
    [[probe]] = HFBackend(policy.model, policy.tokenizer, seed=4, max_new_tokens=30).generate(CONVERSATIONS[:1])
    config = policy.model.generation_config
    original = config.eos_token_id
    config.eos_token_id = [original, max(set(probe.token_ids), key=probe.token_ids.count)]
    try:
        loop, generate = both(policy, seed=4, max_new_tokens=30, batch_size=4)
        ours = loop.generate(CONVERSATIONS, num_samples=3)
        assert ours == generate.generate(CONVERSATIONS, num_samples=3)
    finally:
        config.eos_token_id = original
    lengths = {len(c.token_ids) for samples in ours for c in samples}
    assert len(lengths) > 1 and min(lengths) < 30


def test_loop_matches_generate_on_kept_caches(policy):
    loop, generate = both(policy, seed=5, max_new_tokens=6, min_new_tokens=6)
    follow = {"role": "user", "content": "And then?"}
    dialogues = {}
    for name, backend in (("loop", loop), ("generate", generate)):
        with backend.continuing() as stats:
            first = backend.generate(CONVERSATIONS, num_samples=2)
            second = backend.generate([c + [{"role": "assistant", "content": s[0].text}, follow]
                                       for c, s in zip(CONVERSATIONS, first)])
        assert stats["reused"] > 0
        dialogues[name] = (first, second)
    assert dialogues["loop"] == dialogues["generate"]


def test_loop_hands_over_to_generate_and_says_why(policy, caplog):
    caplog.set_level(logging.INFO, logger="rlhf.backends.kv_reuse")
    backend = HFBackend(policy.model, policy.tokenizer, stop_strings=["."], decode="loop")
    assert not backend.decode_loop and "stop_strings" in caplog.text
    assert "draws with torch.multinomial, not backend.draw=inverse_cdf" in caplog.text  # the draw it cannot keep
    config = policy.model.generation_config
    original = config.repetition_penalty
    config.repetition_penalty = 1.2
    try:
        assert not HFBackend(policy.model, policy.tokenizer, decode="loop").decode_loop
        assert "repetition_penalty" in caplog.text
    finally:
        config.repetition_penalty = original
    assert HFBackend(policy.model, policy.tokenizer, decode="loop").decode_loop
    with pytest.raises(ValueError, match="backend.decode='beam'"):
        HFBackend(policy.model, policy.tokenizer, decode="beam")
    with pytest.raises(ValueError, match="backend.draw='gumbel'"):
        HFBackend(policy.model, policy.tokenizer, draw="gumbel")


def test_loop_decodes_for_a_value_head_policy(policy):
    wrapped = PolicyWithValueHead(policy.model)
    loop = HFBackend(wrapped, policy.tokenizer, decode="loop", draw="multinomial", seed=1, max_new_tokens=5)
    assert loop.decode_loop
    assert loop.generate(CONVERSATIONS) == HFBackend(wrapped, policy.tokenizer, decode="generate", seed=1,
                                                     max_new_tokens=5).generate(CONVERSATIONS)


def test_inverse_cdf_draws_the_distribution():
    torch.manual_seed(0)
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    counts = torch.bincount(inverse_cdf(probs), minlength=6).double()
    assert counts[[0, 2, 5]].sum() == 0  # zero-probability ids never drawn, the last one included
    expected = probs[0] * len(probs)
    chi2 = ((counts - expected)[[1, 3, 4]] ** 2 / expected[[1, 3, 4]]).sum()
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001


def test_inverse_cdf_sampling_matches_generate_in_distribution(policy):
    """Over many rows of one prompt, the first sampled id's frequencies under both draws agree."""
    rows = 3000
    counts = {}
    for draw in ("multinomial", "inverse_cdf"):
        backend = HFBackend(policy.model, policy.tokenizer, draw=draw, seed=2, max_new_tokens=1,
                            batch_size=rows)
        [samples] = backend.generate(CONVERSATIONS[:1], num_samples=rows)
        counts[draw] = torch.bincount(torch.tensor([c.token_ids[0] for c in samples]),
                                      minlength=len(policy.tokenizer)).double()
    a, b = counts["multinomial"], counts["inverse_cdf"]
    seen = (a + b) >= 10
    assert seen.sum() > 5
    chi2 = (((a - b) ** 2) / (a + b))[seen].sum()  # two-sample chi-square on the ids seen >= 10 times
    dof = int(seen.sum()) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5  # far below: a wrong distribution gives thousands
    assert not torch.equal(a, b)  # other draws: a test that the two paths really differ


def _synced_worker(rank: int, tiny_path: str, store: str, out: str) -> None:
    import json

    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    policy = load_policy(tiny_path)
    if rank == 0:  # every even id an eos id: this process's rows finish well before the other's
        policy.model.generation_config.eos_token_id = list(range(0, len(policy.tokenizer), 2))
    calls = []
    hook = policy.model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    settings = dict(seed=7, max_new_tokens=30, lean_step=False)
    synced = HFBackend(policy.model, policy.tokenizer, synced_gpus=True, **settings).generate(CONVERSATIONS[rank:],
                                                                                               num_samples=2)
    hook.remove()
    alone = HFBackend(policy.model, policy.tokenizer, **settings).generate(CONVERSATIONS[rank:], num_samples=2)
    dist.destroy_process_group()
    lengths = [len(c.token_ids) for samples in synced for c in samples]
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"same": synced == alone, "calls": len(calls), "longest": max(lengths)}, f)


def test_synced_processes_step_together_and_sample_as_alone(tiny_path, tmp_path):
    """Two processes (gloo), one whose rows finish early: it keeps calling the model until the other is done
    (as ZeRO-3's gathers need), and each samples the ids it samples alone."""
    import json

    import torch.multiprocessing as mp
    out = str(tmp_path / "result")
    mp.spawn(_synced_worker, args=(tiny_path, str(tmp_path / "store"), out), nprocs=2, join=True)
    results = [json.loads(open(f"{out}.{rank}").read()) for rank in (0, 1)]
    assert all(r["same"] for r in results)
    assert results[0]["longest"] < results[1]["longest"]  # rank 0 idled while rank 1 went on
    assert results[0]["calls"] == results[1]["calls"] == results[1]["longest"]  # prefill + one call per later step
