"""What the PyTorch sides of weft's speed benches share: time one step after
a warm-up and print the one JSON line the Rust driver (`models/benches/common`)
reads -- median and min seconds, peak RSS, torch's version and threads."""

import json
import resource
import statistics
import time

import torch


def time_and_report(phase: str, step, runs: int) -> None:
    """Runs `step` once to warm up, then `runs` timed times, without autograd."""
    times = []
    with torch.inference_mode():
        step()
        for _ in range(runs):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "phase": phase, "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3), "peak_rss_mib": round(peak),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))
