"""`rlhf-train`: train a policy, offline on a task's data or online on fresh rollouts of its openings.
Composition and defaults: conf/train.yaml; the loops: conf/trainer/."""

import math

import hydra
from omegaconf import DictConfig

from rlhf.config import CONF_DIR, build, prepare_run, reported


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
@reported
def main(cfg: DictConfig) -> float:
    from rlhf.data.examples import check_columns  # torch and the libraries load here, not at --help / --cfg
    from rlhf.eval.report import training_summary
    from rlhf.trainers.offline import slurm_rendezvous

    slurm_rendezvous()  # a SLURM job of several tasks trains as one multi-process run
    config = prepare_run(cfg)
    if cfg.stages:  # an experiment of several runs, each a child process (rlhf/pipeline.py)
        from rlhf.pipeline import run_stages, shared_root

        result = run_stages(stages=config["stages"], run_dir=cfg.run_dir, resume=cfg.resume,
                            num_threads=cfg.num_threads, shared=shared_root(cfg.shared_stages, cfg.run_dir))
        return result.get(cfg.objective, math.nan)
    task = build(cfg.task)  # loads and validates the data before any model
    algo = build(cfg.algo)
    if cfg.trainer._target_ in ("rlhf.trainers.offline.fit_offline", "rlhf.trainers.alol.fit_alol"):
        check_columns(task, algo, rewards=cfg.trainer._target_.endswith("fit_alol"))
    backend = build(cfg.backend)
    if not backend.func.in_process_weights:
        raise ValueError(f"backend {cfg.backend._target_} samples the saved policy, not the one rlhf-train is "
                         "training: evaluate and roll out during training with backend=hf, and the saved model "
                         "afterwards with rlhf-eval policy.path=<run dir>/model and this backend")
    fit = build(cfg.trainer)  # the loop and its settings (an online loop also brings its user simulator)
    result = fit(
        policy=build(cfg.policy),
        algo=algo,
        task=task,
        backend=backend,
        reward=build(cfg.reward),
        tokenization=build(cfg.data),
        logger=build(cfg.logger),
        run_dir=cfg.run_dir,
        seed=cfg.seed,
        config=config,
    )
    print(training_summary(result))
    return result.get(cfg.objective, math.nan)


if __name__ == "__main__":
    main()
