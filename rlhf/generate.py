"""`rlhf-generate`: sample K responses per prompt and write a (scored) dataset. Defaults: conf/generate.yaml."""

import hydra
from omegaconf import DictConfig

from rlhf.config import CONF_DIR, build, prepare_run
from rlhf.rollout.sampling import sample_dataset


@hydra.main(config_path=CONF_DIR, config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    prepare_run(cfg)
    task = build(cfg.task)
    prompts = task.prompts(cfg.split, cfg.num_prompts)
    reward = build(cfg.reward) if cfg.reward is not None else None
    dataset = sample_dataset(
        policy=build(cfg.policy),
        backend=build(cfg.backend),
        reward=reward,
        prompts=prompts,
        num_samples=cfg.num_samples,
        run_dir=cfg.run_dir,
    )
    print(f"wrote {len(dataset)} prompts x {cfg.num_samples} samples to {cfg.run_dir}/dataset")
    return float(len(dataset))


if __name__ == "__main__":
    main()
