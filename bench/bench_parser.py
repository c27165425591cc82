"""Console parser speed and accuracy, measured on this host.

- throughput: MB/s of console text through the streaming detector (4 KiB chunks, as a serial
  console delivers them) and through the whole-log report parser;
- latency: time from the feed() call that completes a crash line to the event returned, over
  every crash log of the corpus fed in 64-byte chunks;
- accuracy on the labelled corpus (detected, false positives, exact titles).

Prints a table and writes bench/results/parser.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from reprolab.triage.accuracy import corpus_path, load_corpus, measure
from reprolab.triage.parser import ConsoleParser
from reprolab.triage.report import parse_log

RESULTS = Path(__file__).parent / "results"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "console"


def _stream_throughput(data: bytes, chunk: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        parser = ConsoleParser()
        start = time.perf_counter()
        for pos in range(0, len(data), chunk):
            parser.feed(data[pos : pos + chunk])
        parser.close()
        best = min(best, time.perf_counter() - start)
    return len(data) / best / 1e6


def _report_throughput(logs: list[str], repeat: int) -> float:
    size = sum(len(x.encode()) for x in logs)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for log in logs:
            parse_log(log)
        best = min(best, time.perf_counter() - start)
    return size / best / 1e6


def _latencies(logs: list[bytes], chunk: int) -> list[float]:
    out: list[float] = []
    for data in logs:
        parser = ConsoleParser()
        for pos in range(0, len(data), chunk):
            start = time.perf_counter()
            events = parser.feed(data[pos : pos + chunk])
            took = time.perf_counter() - start
            if events:
                out.append(took)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = load_corpus(corpus_path(Path(__file__)))
    crash_logs = [r["log"] for r in rows if r["title"]]
    # Boot noise dominates real consoles: mix recorded boots with the corpus' crashes.
    boots = [p.read_bytes() for p in sorted(FIXTURES.glob("*.log"))]
    stream = b"\n".join(boots + [r["log"].encode() for r in rows]) * 4
    results: dict[str, Any] = {
        "stream_bytes": len(stream),
        "stream_mb_s": round(_stream_throughput(stream, 4096, args.repeat), 1),
        "stream_small_chunks_mb_s": round(_stream_throughput(stream[: 2 << 20], 64,
                                                             args.repeat), 1),
        "report_mb_s": round(_report_throughput([r["log"] for r in rows], args.repeat), 1),
    }
    lat = sorted(_latencies([x.encode() for x in crash_logs], 64))
    results["latency_events"] = len(lat)
    results["latency_us_p50"] = round(statistics.median(lat) * 1e6, 1)
    results["latency_us_p99"] = round(lat[int(len(lat) * 0.99)] * 1e6, 1)
    results["latency_us_max"] = round(lat[-1] * 1e6, 1)
    acc = measure(rows)
    results["accuracy"] = {k: (round(v, 4) if isinstance(v, float) else v)
                           for k, v in acc.items() if k != "misses"}
    results["accuracy"]["misses"] = acc["misses"]
    width = max(len(k) for k in results)
    print(f"{'metric':<{width}}  value")
    for key, value in results.items():
        if key == "accuracy":
            for k2, v2 in value.items():
                if k2 != "misses":
                    print(f"{'accuracy.' + k2:<{width}}  {v2}")
        else:
            print(f"{key:<{width}}  {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "parser.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
