"""Wall time of composing a config (`--cfg job`) per entrypoint, and of importing torch alone for scale.

    python bench/startup.py --repeats 5

Prints JSON: per command the median and spread (min, max) in seconds over `repeats` runs, interleaved."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "rlhf-train --cfg job": [sys.executable, "-m", "rlhf.train", "--cfg", "job"],
    "rlhf-generate --cfg job": [sys.executable, "-m", "rlhf.generate", "--cfg", "job"],
    "rlhf-eval --cfg job": [sys.executable, "-m", "rlhf.eval", "--cfg", "job"],
    "python -c 'import torch' (scale)": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():  # interleaved, so machine load hits every command alike
            start = time.perf_counter()
            subprocess.run(command, cwd=REPO, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    print(json.dumps({"repeats": args.repeats, "cpus": os.cpu_count(),
                      "seconds": {name: {"median": round(statistics.median(t), 3), "min": round(min(t), 3),
                                         "max": round(max(t), 3)} for name, t in times.items()}}, indent=2))


if __name__ == "__main__":
    main()
