"""Torch CPU threads on a DPO run: each thread count from 1 up to the CPUs this process may use, on an idle
machine and with other work busy on `--busy` cores (a spinning process per core, as another job would be).

Each (condition, threads) run is `bench/dpo_throughput.py --configs ours-dpo` (one offline DPO epoch of
`--pairs` bundled pairs on its 14.5M-parameter model; OMP_NUM_THREADS and torch threads set to the count) in
its own subprocess, interleaved over `--repeats`; the medians of its loop tokens/s are printed, and the
speed of the default (`num_threads: null`: the CPUs the process may use) against one thread.

    python bench/threads.py [--pairs 128 --repeats 3 --busy 1]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dpo_run(threads: int, pairs: int) -> float:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "dpo_throughput.py"), "--configs", "ours-dpo",
                           "--repeats", "1", "--threads", str(threads), "--pairs", str(pairs)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"dpo_throughput failed:\n{done.stderr[-3000:]}")
    out = done.stdout
    start = 0 if out.startswith("{") else out.index("\n{") + 1  # after any library's warning line
    return json.loads(out[start:])["results"]["ours-dpo"]["loop_tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=1, help="cores kept busy in the busy condition")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    counts = list(range(1, cpus + 1))
    rates: dict[str, dict[int, list[float]]] = {c: {t: [] for t in counts} for c in ("idle", "busy")}
    for _ in range(args.repeats):
        for condition in rates:
            spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(args.busy if condition == "busy" else 0)]
            try:
                for threads in counts:
                    rates[condition][threads].append(dpo_run(threads, args.pairs))
            finally:
                for spinner in spinners:
                    spinner.kill()
                    spinner.wait()
    out = {"cpus_available": cpus, "busy_cores": args.busy, "pairs": args.pairs, "repeats": args.repeats,
           "statistic": "median loop tokens/s of ours-dpo [min, max]"}
    for condition, by_count in rates.items():
        out[condition] = {str(t): [round(statistics.median(r), 1), round(min(r), 1), round(max(r), 1)]
                          for t, r in by_count.items()}
        out[f"{condition}_default_over_1_thread"] = round(
            statistics.median(by_count[cpus]) / statistics.median(by_count[1]), 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
