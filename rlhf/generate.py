"""`rlhf-generate`: build a dataset with the policy (and the user simulator and reward), in the way
`mode` says: samples per prompt, full dialogues, REFUEL branched pairs or CollabLLM candidate pairs.
With `push_to_hub=<repo id>`, the finished dataset is also pushed to the hub. Defaults: conf/generate.yaml;
modes: conf/mode/."""

import hydra
from omegaconf import DictConfig

from rlhf.config import CONF_DIR, build, prepare_run, reported
from rlhf.hub import HubPush


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
@reported
def main(cfg: DictConfig) -> float:
    prepare_run(cfg)
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
