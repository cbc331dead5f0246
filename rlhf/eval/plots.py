"""PNG figures of evaluations (matplotlib, no display), written atomically."""

import math
from pathlib import Path

Series = list[tuple[float, float, float]]  # (x, mean, standard error; NaN: none)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def line_plot(path: Path, panels: list[tuple[str, str, dict[str, Series]]], title: str) -> None:
    """One panel per (x label, y label, {line label: points}); each point a mean with its error bar."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (xlabel, ylabel, lines) in zip(axes[0], panels):
        for label, points in lines.items():
            errs = [0.0 if math.isnan(e) else e for _, _, e in points]
            ax.errorbar([x for x, _, _ in points], [y for _, y, _ in points], yerr=errs, marker="o", capsize=3,
                        label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def bar_plot(path: Path, bars: dict[str, tuple[float, float]], ylabel: str, title: str) -> None:
    """One bar per label: (mean, standard error)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(bars) + 2), 4))
    labels = list(bars)
    errs = [0.0 if math.isnan(bars[k][1]) else bars[k][1] for k in labels]
    ax.bar(range(len(labels)), [bars[k][0] for k in labels], yerr=errs, capsize=4, color="C0", alpha=0.7)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _save(fig, path)
