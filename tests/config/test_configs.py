"""The config tree: every option of every group composes, resolves and instantiates; launchers, experiments,
run-directory naming, error messages for bad input, and the real entrypoints' --help / --cfg."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from rlhf.algos.alol import ALoL
from rlhf.algos.dpo import DPO
from rlhf.algos.grpo import GRPO
from rlhf.algos.ppo import PPO
from rlhf.algos.pro import PRO
from rlhf.algos.refuel import REFUEL
from rlhf.algos.reward_model import BradleyTerry
from rlhf.algos.sft import SFT
from rlhf.backends.hf import HFBackend
from rlhf.backends.vllm import VLLMBackend
from rlhf.config import CONF_DIR, setting_problems, unset_keys
from rlhf.data.tokenize import Tokenization
from rlhf.logging import NoLogger, WandbLogger
from rlhf.models.policy import Policy, load_policy
from rlhf.rewards.gold import BagOfWords, Length
from rlhf.rewards.gsm8k import GSM8KCorrect
from rlhf.tasks.dataset import DatasetTask
from rlhf.trainers.alol import fit_alol
from rlhf.trainers.offline import fit_offline
from rlhf.trainers.iterative import fit_iterative
from rlhf.trainers.online import fit_online
from rlhf.rewards.contrastive import ContrastiveDistill
from rlhf.rewards.composite import Composite
from rlhf.rewards.judge import PairwiseJudge, PointwiseJudge
from rlhf.rewards.math_steps import MathEditDistance
from rlhf.rewards.modifiers import Exponent, Noise
from rlhf.rewards.nouns import Nouns
from rlhf.rewards.text_stats import ReadingGrade, TokenDensity
from rlhf.rewards.tfidf import TfIdf
from rlhf.rewards.twenty_questions import Guessed, InformationGain
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.api import APIUser
from rlhf.users.dataset import DatasetUser
from rlhf.users.llm import LLMUser
from rlhf.users.none import NoUser
from rlhf.users.oracle import TwentyQuestionsOracle
from tests.config.test_reward_configs import EXPECTED as MODEL_REWARDS
from tests.unit.test_gold_nouns import nltk_data  # noqa: F401  (a fixture: a tiny tagger for nltk)

CONF = Path(CONF_DIR)
SAMPLES = CONF.parent / "data" / "samples"
# tasks whose configs name hub datasets: built on the bundled samples in the same published schemas
SAMPLE_TASKS = {"hh": "hh_rlhf_trl_style/train.jsonl", "hh_prompts": "hh_rlhf/train.jsonl",
                "ultrainteract": "ultrainteract_pair/train.jsonl",
                "ultrainteract_dialogues": "ultrainteract_pair/train.jsonl",
                "ultrafeedback_prompts": "ultrafeedback_binarized/train_prefs.jsonl", "alol_hh": "pro_hh/train.json",
                "alol_reddit": "alol_reddit/pos_train.jsonl", "alol_wow": "alol_wow/train.jsonl",
                "alol_hh_prompts": "pro_hh/train.json", "alol_comet": "alol_comet/train.jsonl",
                "imdb_prompts": "imdb_prompts/train.jsonl", "gsm8k_prompts": "gsm8k/train.jsonl"}
COMPONENT_GROUPS = ("task", "policy", "user", "reward", "algo", "backend", "logger", "trainer")
PARTIAL_GROUPS = ("backend", "trainer")  # `_partial_`: completed with runtime objects by the entrypoint
GROUPS = (*COMPONENT_GROUPS, "mode", "eval", "launcher", "experiment")
# Every option file under conf/<group>/ (recursively). Adding or removing one must update this number and,
# for a component group, EXPECTED_TYPE below (or, for the reward models, composites and pluralistic golds,
# tests/config/test_reward_configs.py, which builds them on tiny local classifiers), so that every option
# is known to be covered by these tests.
NUM_OPTIONS = 162
# Reward options that wrap another reward option (its `_target_` nested under `reward.reward`).
WRAPPERS = {"reward/noise", "reward/exponent"}
# Options that build other components with them: a task that labels groups (its labelling and gold), the
# online loop (the user simulator it talks to).
NESTED = {"task/synthetic_pluralistic_pairs": ["groups._target_", "groups.gold._target_",
                                               "groups.gold.traits.bow._target_", "groups.gold.traits.calm._target_"],
          "trainer/online": ["user._target_"],
          "reward/collabllm_20q_infogain": ["components.information_gain._target_", "components.accuracy._target_"],
          "reward/collabllm_20q_interactive": ["components.interactivity._target_", "components.accuracy._target_"],
          "trainer/d2po": ["user._target_", "discriminator._target_", "discriminator.model._target_"],
          "trainer/iterative": ["user._target_", "generate._target_", "train._target_"]}

# What instantiating each component option builds (backend: after calling the partial with model/tokenizer).
EXPECTED_TYPE = {
    "task/preference": DatasetTask,
    "task/prompts": DatasetTask,
    "task/synthetic_dialogues": DatasetTask,
    "task/synthetic_prefs": DatasetTask,
    "task/synthetic_prompts": DatasetTask,
    "task/synthetic_groups": DatasetTask,
    "task/synthetic_mixed": DatasetTask,
    "task/synthetic_pluralistic": DatasetTask,
    "policy/hf": Policy,
    "policy/dialogpt": Policy,
    "policy/comet": Policy,
    "policy/gpt2_imdb": Policy,
    "policy/qwen_math": Policy,
    "policy/tiny": Policy,
    "policy/hf_rm": Policy,
    "policy/tiny_rm": Policy,
    "task/twenty_questions": TwentyQuestionsTask,
    "task/synthetic_pluralistic_pairs": DatasetTask,
    **{f"task/{name}": DatasetTask for name in ("hh", "hh_prompts", "ultrainteract", "ultrainteract_dialogues",
                                                "ultrafeedback_prompts", "alol_hh", "alol_reddit", "alol_wow",
                                                "alol_hh_prompts", "alol_comet", "imdb_prompts",
                                                "gsm8k_prompts")},
    "user/none": NoUser,
    "user/dataset": DatasetUser,
    "user/twenty_questions_kb": TwentyQuestionsOracle,
    "user/llm": LLMUser,
    "user/llm_20q": LLMUser,
    "user/api": APIUser,
    "user/api_20q": APIUser,
    "reward/bag_of_words": BagOfWords,
    "reward/tfidf": TfIdf,
    "reward/length": Length,
    "reward/nouns": Nouns,
    "reward/unique_nouns": Nouns,
    "reward/contrastive_distill": ContrastiveDistill,
    "reward/math_edit_distance": MathEditDistance,
    "reward/reading_grade": ReadingGrade,
    "reward/token_density": TokenDensity,
    "reward/noise": Noise,
    "reward/exponent": Exponent,
    "reward/judge_20q": PointwiseJudge,
    "reward/judge_interactivity": PointwiseJudge,
    "reward/collabllm_20q_infogain": Composite,
    "reward/collabllm_20q_interactive": Composite,
    "reward/judge_pairwise": PairwiseJudge,
    "reward/twenty_questions_infogain": InformationGain,
    "reward/twenty_questions_success": Guessed,
    "reward/gsm8k_correct": GSM8KCorrect,
    "algo/dpo": DPO,
    "algo/ipo": DPO,
    "algo/rpo": DPO,
    "algo/sft": SFT,
    "algo/opo": DPO,
    "algo/d2po": DPO,
    "algo/pro": PRO,
    "algo/refuel": REFUEL,
    "algo/rm": BradleyTerry,
    "algo/maxmin_rm": BradleyTerry,
    "algo/sharedrep_rm": BradleyTerry,
    "algo/grpo": GRPO,
    "algo/dr_grpo": GRPO,
    "algo/ppo": PPO,
    **{f"algo/{variant}": ALoL for variant in ("nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free",
                                                "a_lol_seq", "a_lol_kl")},
    "trainer/offline": fit_offline,
    "trainer/alol": fit_alol,
    "trainer/online": fit_online,
    "trainer/d2po": fit_online,
    "trainer/iterative": fit_iterative,
    "backend/hf": HFBackend,
    "backend/vllm": VLLMBackend,
    "logger/none": NoLogger,
    "logger/wandb": WandbLogger,
}
MODE_TARGET = {
    "samples": "rlhf.rollout.sampling.sample_dataset",
    "dialogues": "rlhf.rollout.dialogues.generate_dialogues",
    "refuel_pairs": "rlhf.rollout.branching.refuel_pairs",
    "collabllm_pairs": "rlhf.rollout.collabllm.collabllm_pairs",
}
EVAL_TARGET = {  # rlhf-eval's evaluations, and the settings an option needs to build
    "reward": ("rlhf.eval.evaluate.HeldOutReward", []),
    "checkpoints": ("rlhf.eval.checkpoints.CheckpointCurve", ["eval.run={run_dir}"]),
    "win_rate": ("rlhf.eval.win_rate.WinRatePerTurn", ["eval.baseline.cache_dir={tiny_cache}/tiny"]),
    "games": ("rlhf.eval.games.Games", ["eval.baseline.cache_dir={tiny_cache}/tiny"]),
    "pairs": ("rlhf.eval.pairs.PairAccuracy", []),
}
LAUNCHER_TARGET = {
    "local": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "slurm": "hydra_plugins.rlhf_launcher.slurm.RlhfSlurmLauncher",
}


def options(group: str) -> list[str]:
    """Option names of a group as Hydra spells them ("name", or "sub/name" for nested files)."""
    root = CONF / group
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def compose_cfg(config_name: str, overrides: list[str] = (), hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def target_paths(node, prefix: str = "") -> list[str]:
    """Dotted paths of every `_target_` key inside `node`."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found += [path] if key == "_target_" else target_paths(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += target_paths(value, f"{prefix}[{i}]")
    return found


def leaves(node: dict, prefix: str = "") -> dict:
    """{dotted key: value} of the non-dict values of a nested dict."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        out |= leaves(value, path) if isinstance(value, dict) else {path: value}
    return out


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    """Small local datasets for the task options whose paths are `???`."""
    root = tmp_path_factory.mktemp("config-data")
    prefs = root / "prefs.jsonl"
    prefs.write_text("".join(
        json.dumps({"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."}) + "\n"
        for i in range(4)
    ))
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi there?"}\n{"prompt": [{"role": "user", "content": "Hello?"}]}\n')
    return {"prefs": str(prefs), "prompts": str(prompts)}


@pytest.fixture(scope="module")
def tiny_policy(tiny_path) -> Policy:
    return load_policy(tiny_path)


def required_overrides(group: str, option: str, data_files, tiny_path, tiny_cache, run_dir) -> list[str]:
    """Values for the `???` fields of an option (and a run_dir: `${hydra:...}` is unset under compose)."""
    extra = {
        ("task", "preference"): [f"task.train_path={data_files['prefs']}"],
        ("task", "prompts"): [f"task.eval_path={data_files['prompts']}"],
        ("policy", "hf"): [f"policy.path={tiny_path}"],
        ("policy", "hf_rm"): [f"policy.path={tiny_path}"],
        ("policy", "dialogpt"): [f"policy.path={tiny_path}"],
        ("policy", "comet"): [f"policy.path={tiny_path}", f"policy.tokenizer_path={tiny_path}"],
        ("policy", "gpt2_imdb"): [f"policy.path={tiny_path}"],
        ("policy", "qwen_math"): [f"policy.path={tiny_path}"],
        ("reward", "tfidf"): [f"reward.responses={SAMPLES / 'alol_reddit' / 'pos_train.jsonl'}", "reward.column=references"],
        ("policy", "tiny"): [f"policy.cache_dir={tiny_cache}"],  # the session's tiny model: no rebuild
        ("policy", "tiny_rm"): [f"policy.cache_dir={tiny_cache}"],
        ("user", "llm"): [f"policy.cache_dir={tiny_cache}"],  # the policy's model plays the user
        ("user", "llm_20q"): [f"user.local.path={tiny_path}"],
        ("trainer", "d2po"): [f"trainer.discriminator.model.cache_dir={tiny_cache}"],
        ("reward", "contrastive_distill"): [f"reward.strong={tiny_path}", f"reward.weak={tiny_path}"],
        # the length filters measure with the policy's tokenizer: the session's tiny model
        **{("task", name): [f"task.train_path={SAMPLES / path}", f"task.eval_path={SAMPLES / path}",
                            f"policy.cache_dir={tiny_cache}"] for name, path in SAMPLE_TASKS.items()},
    }
    return [f"{group}={option}", f"run_dir={run_dir}", *extra.get((group, option), [])]


# ---- the option tree -----------------------------------------------------------------------------------


def test_every_group_has_options_and_the_total_is_known():
    found = {group: options(group) for group in GROUPS}
    for group, names in found.items():
        assert names, f"conf/{group}/ has no option"
    assert sum(len(names) for names in found.values()) == NUM_OPTIONS, found
    component_options = {f"{g}/{o}" for g in COMPONENT_GROUPS for o in found[g]}
    assert component_options == set(EXPECTED_TYPE) | {f"reward/{o}" for o in MODEL_REWARDS}
    assert not set(EXPECTED_TYPE) & {f"reward/{o}" for o in MODEL_REWARDS}
    assert set(found["launcher"]) == set(LAUNCHER_TARGET)
    assert set(found["mode"]) == set(MODE_TARGET)
    assert set(found["eval"]) == set(EVAL_TARGET)


@pytest.mark.parametrize("group_option", sorted(EXPECTED_TYPE))
def test_component_option_composes_resolves_and_instantiates(
    group_option, data_files, tiny_path, tiny_cache, tiny_policy, tmp_path, nltk_data
):
    group, option = group_option.split("/", 1)
    cfg = compose_cfg("train", required_overrides(group, option, data_files, tiny_path, tiny_cache, tmp_path))
    assert OmegaConf.missing_keys(cfg) == set()
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation of the whole config resolves
    assert resolved["run_dir"] == str(tmp_path)
    assert setting_problems(resolved) == []  # the early settings check accepts every option as shipped
    # Exactly one object is built per group: one `_target_`, at the node's top level (a wrapper reward
    # also builds the reward it wraps).
    expected_targets = ["_target_", "reward._target_"] if group_option in WRAPPERS else ["_target_"]
    expected_targets = sorted(expected_targets + NESTED.get(group_option, []))
    assert sorted(target_paths(resolved[group])) == expected_targets
    target = get_object(resolved[group]["_target_"])  # the target is importable

    built = instantiate(cfg[group])
    if group in PARTIAL_GROUPS:
        assert isinstance(built, functools.partial) and built.func is target
    if group == "backend":  # the model and tokenizer are supplied by the entrypoint
        if option == "vllm":  # vLLM needs a GPU: without it, building names the extra
            with pytest.raises(ImportError, match=r"pip install 'rlhf\[vllm\]'"):
                built(model=tiny_policy.model, tokenizer=tiny_policy.tokenizer)
            return
        built = built(model=tiny_policy.model, tokenizer=tiny_policy.tokenizer)
    if group == "trainer":  # a training loop: the partial's function is the expected one
        assert built.func is EXPECTED_TYPE[group_option]
    else:
        assert isinstance(built, EXPECTED_TYPE[group_option])
    if isinstance(target, type):
        assert isinstance(built, target)

    if isinstance(built, DatasetTask):  # rows loaded and validated
        assert built.name == cfg.task.name and built.schema == cfg.task.schema
    if group == "task":  # openings end with the user turn the policy answers
        split = "eval" if isinstance(built, DatasetTask) and built.eval is not None else "train"
        openings, fields = built.openings(split, limit=3)
        assert len(openings) == len(fields) > 0 and all(p[-1]["role"] == "user" for p in openings)
        assert all(set(getattr(built, "fields", ())) <= set(f) for f in fields)  # the fields it names
        assert built.max_turns >= 1
    if group == "policy":
        assert built.tokenizer.chat_template is not None
        assert built.model.config.vocab_size == len(built.tokenizer)
    if group_option == "policy/dialogpt":  # DialoGPT's turns: each followed by the eos token, nothing else
        eos = built.tokenizer.eos_token
        messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
        assert built.tokenizer.apply_chat_template(messages, tokenize=False) == f"hi{eos}hello{eos}"
    if group_option == "policy/gpt2_imdb":  # a review's opening, then its continuation and eos
        messages = [{"role": "user", "content": "This film"}, {"role": "assistant", "content": " was fine"}]
        assert built.tokenizer.apply_chat_template(messages, tokenize=False) == f"This film was fine{built.tokenizer.eos_token}"
    if group_option == "policy/comet":  # COMET-distill's "<head> ... [GEN]" prompt, then " tail" and eos
        eos = built.tokenizer.eos_token
        messages = [{"role": "user", "content": "<head> h </head> <relation> xWant </relation> [GEN]"},
                    {"role": "assistant", "content": "to eat"}]
        assert built.tokenizer.apply_chat_template(messages, tokenize=False) == f"{messages[0]['content']} to eat{eos}"
        assert built.tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == (
            messages[0]["content"])
    if isinstance(built, WandbLogger):
        assert built.run is None and built.mode in ("online", "offline")  # built, never started


def test_policy_options_load_the_same_tiny_model(tiny_path, tiny_cache, data_files, tmp_path):
    # policy=tiny builds into (here: finds in) its cache the model that policy=hf loads by path.
    tiny = instantiate(compose_cfg("train", required_overrides(
        "policy", "tiny", data_files, tiny_path, tiny_cache, tmp_path)).policy)
    hf = instantiate(compose_cfg("train", required_overrides(
        "policy", "hf", data_files, tiny_path, tiny_cache, tmp_path)).policy)
    assert Path(tiny.path).resolve() == Path(tiny_path).resolve() == Path(hf.path).resolve()


@pytest.mark.parametrize("option", sorted(MODE_TARGET))
def test_mode_option_is_a_generation_function(option, tmp_path):
    cfg = compose_cfg("generate", [f"mode={option}", f"run_dir={tmp_path}"])
    built = instantiate(cfg.mode)
    assert isinstance(built, functools.partial) and built.func is get_object(MODE_TARGET[option])


@pytest.mark.parametrize("option", sorted(EVAL_TARGET))
def test_eval_option_is_an_evaluation(option, tmp_path, tiny_cache):
    (tmp_path / "config.yaml").write_text("policy: {}\n")  # a training run directory, for eval=checkpoints
    target, extra = EVAL_TARGET[option]
    cfg = compose_cfg("eval", [f"eval={option}", f"run_dir={tmp_path}", *(e.format(run_dir=tmp_path, tiny_cache=tiny_cache) for e in extra)])
    assert OmegaConf.missing_keys(cfg) == set()
    nested = ["baseline._target_"] if option in ("win_rate", "games") else []  # the baseline policy it compares with
    assert sorted(target_paths(OmegaConf.to_container(cfg.eval, resolve=True))) == ["_target_", *nested]
    built = instantiate(cfg.eval)
    assert isinstance(built, get_object(target)) and callable(built)


@pytest.mark.parametrize("option", sorted(LAUNCHER_TARGET))
def test_launcher_option_sets_the_hydra_launcher(option):
    cfg = compose_cfg("train", [f"launcher={option}"], hydra_config=True)
    assert cfg.hydra.launcher._target_ == LAUNCHER_TARGET[option]
    assert isinstance(get_object(LAUNCHER_TARGET[option]), type)  # the plugin is installed
    # a launcher changes where a run executes, not what it computes: it stays out of the run directory name
    assert cfg.hydra.job.override_dirname == ""
    if option == "submitit_local":
        assert (cfg.hydra.launcher.cpus_per_task, cfg.hydra.launcher.mem_gb, cfg.hydra.launcher.timeout_min) == (
            2, 8, 60)
    if option == "slurm":  # the submitit SLURM launcher with the choice not to wait
        bases = [f"{c.__module__}.{c.__name__}" for c in get_object(LAUNCHER_TARGET[option]).__mro__]
        assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in bases
        assert cfg.hydra.launcher.wait is True


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_overrides_its_keys(name):
    default = compose_cfg("train")
    cfg = compose_cfg("train", [f"experiment={name}"])
    spec = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"))
    defaults = spec.pop("defaults", [])
    # a config it builds on (another experiment, or a pipeline of conf/pipelines/) sets values of its own
    bases = [entry for entry in defaults if isinstance(entry, str) and entry != "_self_"]
    group_overrides = [entry for entry in defaults if isinstance(entry, dict)]
    values = leaves(spec)
    assert values or group_overrides, f"experiment {name} changes nothing"
    # values left for the command line (??? in the experiment, e.g. the path of a dataset) are set here
    placed = compose_cfg("train", [f"experiment={name}", "run_dir=/nowhere"])
    unset = [f"{key}=/somewhere" for key in unset_keys(placed)]
    resolved = OmegaConf.to_container(compose_cfg("train", [f"experiment={name}", "run_dir=/nowhere", *unset]),
                                      resolve=True)
    assert setting_problems(resolved) == []
    for key, value in values.items():
        if isinstance(value, str) and ("${" in value or value == "???") or key.startswith("stages."):
            continue  # an interpolation (checked by resolving the whole config above), or a stage's overrides
            # (tests/config/test_experiments.py composes each stage)
        assert OmegaConf.select(cfg, key) == value, key
        if not bases:
            assert OmegaConf.select(default, key) != value, f"{key} already is {value!r} by default"
    chosen = compose_cfg("train", [f"{key.removeprefix('override /')}={option}"
                                   for entry in group_overrides for key, option in entry.items()])
    for entry in group_overrides:  # e.g. {"override /task": "synthetic_dialogues"}
        [(key, option)] = entry.items()
        group = key.removeprefix("override /")

        def own(node):  # the group's keys the experiment does not set itself
            return {k: v for k, v in OmegaConf.to_container(node).items() if not any(v_key == f"{group}.{k}" or v_key.startswith(f"{group}.{k}.")
                                                          for v_key in values)}
        assert own(cfg[group]) == own(chosen[group]), group
        assert cfg[group] != default[group]


def test_sft_dialogues_experiment_is_sft_on_conversations():
    cfg = compose_cfg("train", ["experiment=sft_dialogues"])
    assert cfg.algo._target_ == "rlhf.algos.sft.SFT"
    assert cfg.task.schema == "conversation" and cfg.task.name == "synthetic_dialogues"
    assert (cfg.trainer.max_steps, cfg.trainer.learning_rate) == (100, 1e-3)


# ---- primary configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "generate", "eval"])
def test_primary_config_composes_with_defaults(name, tmp_path):
    cfg = compose_cfg(name, [f"run_dir={tmp_path}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert OmegaConf.missing_keys(cfg) == set()
    assert setting_problems(resolved) == []
    for group in ("task", "policy", "user", "reward", "backend"):
        assert resolved[group]["_target_"], group
    assert resolved["task"]["name"] == "synthetic_prefs" and resolved["seed"] == 0
    assert resolved["backend"]["seed"] == resolved["seed"]  # ${seed}
    # Only training has an algorithm, a trainer, a logger and tokenisation settings.
    train_only = {"algo", "trainer", "logger", "data"}
    if name == "train":
        assert train_only <= resolved.keys()
    else:
        assert not train_only & resolved.keys()
    if name == "generate":
        assert (resolved["split"], resolved["num_prompts"], resolved["mode"]["num_samples"]) == ("train", None, 4)
    hydra_cfg = compose_cfg(name, hydra_config=True).hydra
    assert hydra_cfg.run.dir == f"outputs/{name}/default"  # no overrides -> "default"
    assert hydra_cfg.job.chdir is False
    if name == "eval":  # `python -m rlhf.eval` would otherwise be job "__main__"
        assert hydra_cfg.job.name == "eval"


def test_train_data_and_trainer_nodes_instantiate(tmp_path):
    cfg = compose_cfg("train", [f"run_dir={tmp_path}"])
    assert instantiate(cfg.data) == Tokenization(max_length=256, truncation="left")
    fit = instantiate(cfg.trainer)
    assert isinstance(fit, functools.partial) and fit.keywords["batch_size"] == 16


# ---- bad input -----------------------------------------------------------------------------------------


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as excinfo:
        compose_cfg("train", ["algo=nonexistent"])
    message = str(excinfo.value)
    assert "Could not find 'algo/nonexistent'" in message
    # Hydra lists the options, one per line: "Available options in 'algo':\n\tdpo\n\tipo\n\tsft"
    assert "Available options in 'algo':\n" + "".join(f"\t{o}\n" for o in options("algo")) in message


def test_invalid_values_fail_at_instantiation_naming_the_key():
    cfg = compose_cfg("train", ["algo.loss_type=bogus", "data.truncation=middle"])
    # Hydra wraps the constructor's ValueError (kept as __cause__) in an InstantiationException.
    with pytest.raises(InstantiationException, match=r"algo\.loss_type must be one of .*got 'bogus'") as excinfo:
        instantiate(cfg.algo)
    assert isinstance(excinfo.value.__cause__, ValueError)
    with pytest.raises(InstantiationException, match=r"data\.truncation='middle' is not one of") as excinfo:
        instantiate(cfg.data)
    assert isinstance(excinfo.value.__cause__, ValueError)


def test_missing_required_value_is_reported(tmp_path):
    cfg = compose_cfg("train", ["task=preference", f"run_dir={tmp_path}"])
    assert "task.train_path" in OmegaConf.missing_keys(cfg)
    with pytest.raises(MissingMandatoryValue, match=r"Missing mandatory value: task\.train_path"):
        instantiate(cfg.task)


# ---- run directories -----------------------------------------------------------------------------------


def test_run_dir_is_named_from_overrides_without_logger_or_launcher():
    cfg = compose_cfg("train", ["algo=sft", "seed=3", "logger=wandb", "launcher=local", "trainer.log_every=5"],
                      hydra_config=True)
    assert cfg.hydra.job.override_dirname == "algo:sft+seed:3"
    assert cfg.hydra.run.dir == "outputs/train/algo:sft+seed:3"
    assert (cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir) == ("multirun/train", "algo:sft+seed:3")
    # what changes the computation does name the directory
    cfg = compose_cfg("train", ["trainer.max_steps=7", "experiment=debug"], hydra_config=True)
    assert cfg.hydra.job.override_dirname == "experiment:debug+trainer.max_steps:7"
    # and a run directory goes back on the command line unquoted
    cfg = compose_cfg("eval", [f"policy.path=outputs/train/{cfg.hydra.job.override_dirname}/model"])
    assert cfg.policy.path == "outputs/train/experiment:debug+trainer.max_steps:7/model"


# ---- the real entrypoints (about 6 s each for the imports; run side by side) -----------------------------


@pytest.fixture(scope="module")
def entrypoint_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("entrypoints")
    script = Path(sys.executable).with_name("rlhf-train")
    assert script.exists(), script
    commands = {
        "help": [str(script), "--help"],
        "cfg": [str(script), "--cfg", "job"],
        "module": [sys.executable, "-m", "rlhf.train", "algo=sft", "--cfg", "job"],
    }
    procs = {k: subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    runs = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        runs[key] = subprocess.CompletedProcess(commands[key], proc.returncode, out, err)
    assert not any(cwd.iterdir()), "printing the config must not create a run directory"
    return runs


@pytest.mark.slow
def test_train_help_lists_every_group_option(entrypoint_runs):
    run = entrypoint_runs["help"]
    assert run.returncode == 0, run.stderr
    assert "== Configuration groups ==" in run.stdout
    for group in GROUPS:
        assert f"\n{group}: {', '.join(options(group))}\n" in run.stdout, group
    assert "run_dir: ${hydra:runtime.output_dir}" in run.stdout


@pytest.mark.slow
def test_train_cfg_job_prints_the_default_config(entrypoint_runs):
    run = entrypoint_runs["cfg"]
    assert run.returncode == 0, run.stderr
    printed = yaml.safe_load(run.stdout)
    assert "hydra" not in printed
    assert printed["algo"]["_target_"] == "rlhf.algos.dpo.DPO"
    assert printed["task"]["name"] == "synthetic_prefs" and printed["data"]["max_length"] == 256
    expected = OmegaConf.to_container(compose_cfg("train"))  # the same as composing it here
    assert printed == expected


@pytest.mark.slow
def test_python_m_train_applies_overrides(entrypoint_runs):
    run = entrypoint_runs["module"]
    assert run.returncode == 0, run.stderr
    printed = yaml.safe_load(run.stdout)
    assert printed["algo"] == {"_target_": "rlhf.algos.sft.SFT"}
    assert printed["logger"]["_target_"] == "rlhf.logging.NoLogger"
