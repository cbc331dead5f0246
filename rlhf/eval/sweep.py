"""`rlhf-eval sweep=<dir>`: one table (and plot) of a finished sweep, with seeds averaged.

A run is a directory under the sweep directory holding `.hydra/overrides.yaml` (what Hydra writes for every
job). Its results are `final_metrics.json` (rlhf-train) or `eval.json` (rlhf-eval); a run without them is
reported as unfinished (with its SLURM job id when the sweep was submitted with `hydra.launcher.wait=false`).
Runs whose overrides differ only in the `over` keys (default: seed) form a group; each metric is reported as
the mean over the group's runs, its standard error and the number of runs. Written to the sweep directory:
`summary.md`, `summary.csv`, `summary.json` and `summary.png` (the main metric per group, each run a dot,
the groups' mean training-loss curves, and where the groups differ in one numeric override, such as
`data.proportion`, the metric against it).
"""

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlhf.atomic import write_text
from rlhf.eval.report import format_table
from rlhf.pipeline import SHARED_MARKER

log = logging.getLogger(__name__)

RESULT_FILES = ("final_metrics.json", "eval.json")
# shown in the table when present, in this order (every shared metric goes to summary.json and summary.csv)
PREFERRED = ("eval/reward_mean", "before/eval/reward_mean", "reward_mean", "win_rate", "success", "baseline/success",
             "eval/rewards/accuracy", "eval/loss", "train/loss")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] | None  # None: not finished
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)


@dataclass
class Group:
    label: str
    runs: list[Run]

    def stats(self, metric: str) -> dict:
        values = [r.metrics[metric] for r in self.runs if metric in r.metrics]
        n = len(values)
        mean = sum(values) / n if n else math.nan
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
        return {"mean": mean, "stderr": math.sqrt(var / n) if n > 1 else math.nan, "n": n, "values": values}

    def curve(self) -> list[tuple[int, float]]:
        """Mean training loss per step over the group's runs that logged that step."""
        by_step: dict[int, list[float]] = {}
        for run in self.runs:
            for step, loss in run.curve:
                by_step.setdefault(step, []).append(loss)
        return [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())]


def read_run(path: Path) -> Run:
    listed = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    ignored = set(_excluded_keys(path))
    overrides = {}
    for item in listed:
        key, _, value = str(item).lstrip("+~").partition("=")
        if key not in ignored and not key.startswith("hydra."):
            overrides[key] = value
    metrics = None
    for name in RESULT_FILES:
        if (path / name).is_file():
            loaded = json.loads((path / name).read_text())
            metrics = {k: float(v) for k, v in loaded.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            break
    return Run(path, overrides, metrics, _loss_curve(path / "metrics.jsonl"))


def _excluded_keys(path: Path) -> list[str]:
    """The keys Hydra left out of the run's directory name (they do not change what is computed)."""
    hydra_yaml = path / ".hydra" / "hydra.yaml"
    if not hydra_yaml.is_file():
        return []
    config = yaml.safe_load(hydra_yaml.read_text()) or {}
    return config.get("hydra", {}).get("job", {}).get("config", {}).get("override_dirname", {}).get("exclude_keys", [])


def _loss_curve(path: Path) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row.get("loss"), (int, float)):
                points.append((int(row["step"]), float(row["loss"])))
    return points


def find_runs(sweep_dir: Path) -> list[Run]:
    dirs = [p.parent.parent for p in sorted(sweep_dir.rglob(".hydra/overrides.yaml"))
            if not any(part.startswith(".") for part in p.parent.parent.relative_to(sweep_dir).parts)]
    # stages the runs share (rlhf/pipeline.py) are parts of those runs, not runs of the sweep
    dirs = [d for d in dirs if not any((parent / SHARED_MARKER).is_file() for parent in d.parents)]
    # the stages of an experiment of stages are runs inside its run: the experiment's run is the sweep's
    runs = [read_run(d) for d in dirs if not any(parent in set(dirs) for parent in d.parents)]
    runs = [r for r in runs if "sweep" not in r.overrides]  # an `rlhf-eval sweep=...` run itself
    if not runs:
        raise FileNotFoundError(f"no runs under {sweep_dir}: a run directory holds .hydra/overrides.yaml, as "
                                "every job of `rlhf-train -m ...` writes")
    return runs


def group_runs(runs: list[Run], over: list[str]) -> tuple[list[Group], dict[str, str]]:
    """Groups of the finished runs by their overrides without the `over` keys, labelled by the overrides
    that vary between groups; also returns the overrides every run shares."""
    finished = [r for r in runs if r.metrics is not None]
    keys = sorted({k for r in runs for k in r.overrides} - set(over))
    common = {k: runs[0].overrides[k] for k in keys
              if all(k in r.overrides and r.overrides[k] == runs[0].overrides[k] for r in runs)}
    varying = [k for k in keys if k not in common]
    groups: dict[str, list[Run]] = {}
    for run in finished:
        label = ",".join(f"{k}={run.overrides[k]}" for k in varying if k in run.overrides) or "all runs"
        groups.setdefault(label, []).append(run)
    return [Group(label, members) for label, members in sorted(groups.items())], common


def shared_metrics(groups: list[Group]) -> list[str]:
    names = [set(r.metrics) for g in groups for r in g.runs]
    shared = set.intersection(*names) if names else set()
    return sorted(shared, key=lambda m: (PREFERRED.index(m) if m in PREFERRED else len(PREFERRED), m))


def summarize_sweep(sweep_dir: str | Path, over: list[str] | None = None, metrics: list[str] | None = None) -> dict:
    """Aggregate the runs under `sweep_dir`; writes summary.{json,csv,md,png} there and prints the table."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep={sweep_dir}: no such directory")
    over = list(over if over is not None else ["seed"])
    runs = find_runs(sweep_dir)
    groups, common = group_runs(runs, over)
    unfinished = _unfinished(sweep_dir, runs)
    if not groups:
        raise RuntimeError(f"none of the {len(runs)} runs under {sweep_dir} has finished:\n  " + "\n  ".join(unfinished))
    available = shared_metrics(groups)
    if metrics:
        missing = [m for m in metrics if m not in available]
        if missing:
            raise KeyError(f"sweep_metrics {missing} are not in every finished run's results; shared metrics: "
                           f"{available}")
        shown = list(metrics)
    else:
        shown = [m for m in PREFERRED if m in available] or available[:4]
    summary = {
        "sweep_dir": str(sweep_dir), "over": over, "common_overrides": common, "metrics": shown,
        "groups": [{"group": g.label, "runs": [str(r.path.relative_to(sweep_dir)) for r in g.runs],
                    "metrics": {m: g.stats(m) for m in available}} for g in groups],
        "unfinished": unfinished,
    }
    write_text(sweep_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=True))
    write_text(sweep_dir / "summary.csv", _csv(groups, available))
    table = _markdown(groups, shown, over, common, unfinished)
    write_text(sweep_dir / "summary.md", table)
    _plot(sweep_dir / "summary.png", groups, shown[0])
    print(format_table([("sweep", str(sweep_dir)), ("runs", f"{len(runs) - len(unfinished)} finished, "
                                                            f"{len(unfinished)} unfinished"),
                        ("groups", f"{len(groups)} (averaged over {', '.join(over) or 'nothing'})"),
                        ("written", "summary.md, summary.csv, summary.json, summary.png")],
                       "sweep summary"))
    print(table)
    for line in unfinished:
        log.warning("unfinished run: %s", line)
    return summary


def _unfinished(sweep_dir: Path, runs: list[Run]) -> list[str]:
    """Unfinished runs, with their SLURM job id when submitted.json (hydra.launcher.wait=false) lists them."""
    job_of: dict[str, str] = {}
    submitted = sweep_dir / "submitted.json"
    if submitted.is_file():
        for entry in json.loads(submitted.read_text()):
            for task in entry["tasks"]:
                job_of[str(Path(task["run_dir"]).resolve())] = task["job_id"]
    lines = []
    for run in runs:
        if run.metrics is None:
            job = job_of.get(str(run.path.resolve()))
            lines.append(str(run.path.relative_to(sweep_dir)) + (f" (SLURM job {job})" if job else ""))
    return lines


def _fmt(stats: dict) -> str:
    if not stats["n"]:
        return "-"
    if math.isnan(stats["stderr"]):
        return f"{stats['mean']:.4g}"
    return f"{stats['mean']:.4g} ± {stats['stderr']:.2g}"


def _markdown(groups: list[Group], shown: list[str], over: list[str], common: dict, unfinished: list[str]) -> str:
    header = ["group", "runs", *shown]
    lines = [f"Mean ± standard error over {', '.join(over) or 'nothing'}"
             + (f"; all runs: {', '.join(f'{k}={v}' for k, v in common.items())}" if common else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for g in groups:
        lines.append("| " + " | ".join([g.label, str(len(g.runs)), *(_fmt(g.stats(m)) for m in shown)]) + " |")
    if unfinished:
        lines += ["", f"Unfinished ({len(unfinished)}): " + "; ".join(unfinished)]
    return "\n".join(lines) + "\n"


def _csv(groups: list[Group], metrics: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group", "runs", *(f"{m}_{s}" for m in metrics for s in ("mean", "stderr", "n"))])
    for g in groups:
        cells = []
        for m in metrics:
            stats = g.stats(m)
            cells += [stats["mean"], stats["stderr"], stats["n"]]
        writer.writerow([g.label, len(g.runs), *cells])
    return out.getvalue()


def numeric_axis(groups: list[Group]) -> tuple[str, list[float]] | None:
    """(key, values) when the groups differ in one override whose values are all numbers (e.g. a sweep over
    data.proportion): the metric is then also drawn against it."""
    pairs = [g.label.split("=", 1) for g in groups]
    if len(groups) < 2 or any(len(p) != 2 or "," in p[1] for p in pairs) or len({k for k, _ in pairs}) != 1:
        return None
    try:
        return pairs[0][0], [float(v) for _, v in pairs]
    except ValueError:
        return None


def _plot(path: Path, groups: list[Group], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(g.label, g.curve()) for g in groups]
    with_curves = any(points for _, points in curves)
    axis = numeric_axis(groups)
    panels = 1 + with_curves + (axis is not None)
    height = max(3.0, 1 + 0.4 * len(groups))
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, height), squeeze=False)
    bars = axes[0][0]
    for y, g in enumerate(groups):
        stats = g.stats(metric)
        err = None if math.isnan(stats["stderr"]) else stats["stderr"]
        bars.barh(y, stats["mean"], xerr=err, color="C0", alpha=0.6, capsize=3)
        bars.scatter(stats["values"], [y] * stats["n"], color="k", s=12, zorder=3)
    bars.set_yticks(range(len(groups)), [g.label for g in groups], fontsize=8)
    bars.set_xlabel(f"{metric} (bar: mean ± s.e., dots: runs)")
    if with_curves:
        ax = axes[0][1]
        for label, points in curves:
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (mean over runs)")
        ax.legend(fontsize=7)
    if axis is not None:
        key, xs = axis
        ax = axes[0][-1]
        order = sorted(range(len(groups)), key=lambda i: xs[i])
        stats = [groups[i].stats(metric) for i in order]
        ax.errorbar([xs[i] for i in order], [st["mean"] for st in stats],
                    yerr=[0.0 if math.isnan(st["stderr"]) else st["stderr"] for st in stats], marker="o", capsize=3)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (mean ± s.e. over runs)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
