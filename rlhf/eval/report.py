"""Console tables of evaluation results."""


def format_table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([title, line, *(f"{k:<{width}} | {v}" for k, v in rows), line])


def reward_line(metrics: dict[str, float], prefix: str = "") -> str:
    line = f"{metrics[prefix + 'reward_mean']:.3f} ± {metrics[prefix + 'reward_stderr']:.3f} (n={int(metrics[prefix + 'n'])})"
    invalid = int(metrics.get(prefix + "reward_invalid", 0))
    return line + (f", {invalid} invalid" if invalid else "")


def training_summary(result: dict[str, float]) -> str:
    """Reward before and after training (when both were measured) and the final eval metrics."""
    rows = []
    if "before/eval/reward_mean" in result:
        rows.append(("reward before training", reward_line(result, "before/eval/")))
    if "eval/reward_mean" in result:
        rows.append(("reward after training", reward_line(result, "eval/")))
    rows += [(k, f"{v:.4f}") for k, v in result.items()
             if k.startswith(("eval/loss", "train/loss", "eval/rewards/accuracy")) and "reward_" not in k]
    return format_table(rows, "training result")


def markdown_table(header: list[str], rows: list[tuple | list]) -> str:
    """A GitHub markdown table (cells as given: format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"
