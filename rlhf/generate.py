"""`rlhf-generate`: build a dataset with the policy (and the user simulator and reward), in the way
`mode` says: samples per prompt, full dialogues, REFUEL branched pairs or CollabLLM candidate pairs.
With `push_to_hub=<repo id>`, the finished dataset is also pushed to the hub. Defaults: conf/generate.yaml;
modes: conf/mode/."""

import hydra
from omegaconf import DictConfig

from rlhf.config import CONF_DIR, NO_USER, build, prepare_run, reported

NEEDS_USER = ("generate_dialogues", "refuel_pairs", "collabllm_pairs")
NEEDS_REWARD = ("refuel_pairs", "collabllm_pairs")


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
@reported
def main(cfg: DictConfig) -> float:
    prepare_run(cfg)
    if cfg.split not in ("train", "eval"):
        raise ValueError(f"split={cfg.split!r} is not a split of the task: train or eval")
    mode = cfg.mode._target_.rsplit(".", 1)[-1]
    if mode in NEEDS_USER and cfg.user._target_ == NO_USER and (cfg.task.get("max_turns", 1) > 1
                                                                or mode == "collabllm_pairs"):
        raise ValueError(f"mode={mode} on a task of {cfg.task.max_turns} policy turns talks to a "
                         "user simulator, and user=none has none: choose one with user= (e.g. user=dataset replays "
                         "the data's user turns, user=twenty_questions_kb answers 20 Questions)")
    if mode in NEEDS_REWARD and cfg.get("reward") is None:
        raise ValueError(f"mode={mode} ranks what it generates with a reward: set reward=...")
    from rlhf.hub import HubPush  # datasets loads here, not at --help / --cfg

    push = HubPush(cfg.push_to_hub, cfg.push_private) if cfg.push_to_hub else None  # checks HF_TOKEN first
    task = build(cfg.task)  # loads and validates the data before any model
    generate = build(cfg.mode)
    dataset = generate(
        policy=build(cfg.policy),
        backend=build(cfg.backend),
        user=build(cfg.user),
        reward=build(cfg.reward) if cfg.get("reward") is not None else None,
        task=task,
        split=cfg.split,
        num_prompts=cfg.num_prompts,
        seed=cfg.seed,
        run_dir=cfg.run_dir,
    )
    print(f"wrote {len(dataset)} rows to {cfg.run_dir}")
    if push is not None:
        push(dataset)
    return float(len(dataset))


if __name__ == "__main__":
    main()
