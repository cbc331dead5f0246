"""`rlhf-eval` / `python -m rlhf.eval`: a policy evaluated by the `eval` group's evaluation (conf/eval/), or
with `sweep=<dir>` the table of a finished sweep (rlhf.eval.sweep). Defaults: conf/eval.yaml."""

import hydra
from omegaconf import DictConfig

from rlhf.config import CONF_DIR, NO_USER, build, prepare_run, reported
from rlhf.eval.sweep import summarize_sweep


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
@reported
def main(cfg: DictConfig) -> float | None:
    if cfg.sweep is not None:
        summarize_sweep(cfg.sweep, over=cfg.sweep_over, metrics=cfg.sweep_metrics)
        return None
    prepare_run(cfg)
    if cfg.eval._target_ == "rlhf.eval.games.Games" and cfg.user._target_ == NO_USER:
        raise ValueError("eval=games plays the task against a user simulator, and user=none has none: choose one "
                         "with user= (e.g. task=twenty_questions user=twenty_questions_kb)")
    evaluation = build(cfg.eval)  # builds its baseline policy, if any
    result = evaluation(
        policy=build(cfg.policy, _partial_=True),  # loaded by the evaluation, which may load others instead
        task=build(cfg.task),
        reward=build(cfg.reward),
        backend=build(cfg.backend),
        user=build(cfg.user),
        run_dir=cfg.run_dir,
        seed=cfg.seed,
    )
    return result.get(cfg.objective)


if __name__ == "__main__":
    main()
