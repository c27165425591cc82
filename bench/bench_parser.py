"""Console parser speed and accuracy, measured on this host.

- throughput: MB/s of console text through the streaming detector (4 KiB chunks, as a serial
  console delivers them) and through the whole-log report parser;
- latency: time from the feed() call that completes a crash line to the event returned, over
  every crash log of the corpus fed in 64-byte chunks;
- accuracy on the labelled corpus (detected, false positives, exact titles);
- worst case: seconds per MB of hostile lines (one long line of a header word, lines that
  make a rule look for a line that never comes, no newline at all), whole-log and streaming,
  next to the normal rate (issue 16: these were quadratic);
- a noisy real-machine log (syslog/journal/dmesg -T prefixes, escapes, NULs, CRLF, firmware
  lines around the field logs of tests/data/field): MB/s through `reprolab triage`'s reader;
- peak memory (max RSS of a fresh process) triaging a 1 GB log generated in /var/tmp (deleted
  afterwards), with a crash in the middle.

Prints a table and writes bench/results/parser.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprolab.detect.accuracy import corpus_path, load_corpus, measure
from reprolab.detect.logfile import _MARKER_RE, parse_file
from reprolab.detect.parser import ConsoleParser
from reprolab.detect.report import parse_log

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


#: Hostile inputs of about ``n`` MB each (the reproductions of issue 16 item 1, scaled).
HOSTILE: dict[str, Callable[[int], bytes]] = {
    "warning-line": lambda n: b"[ 1.0] " + b"WARNING: " * (116_000 * n) + b"\n",
    "bug-line": lambda n: b"BUG: " * (210_000 * n) + b"\n",
    "still-has-locks-lines": lambda n: (b"[ 1.0] BUG: " + b"x still has locks held" * 90
                                        + b"\n") * (520 * n),
    "held-lock-lines": lambda n: b"[ 1.0] BUG: held lock freed!\n" * (36_000 * n),
    "ubsan-line": lambda n: b"[ 1.0] UBSAN: " + b"a" * (1_048_000 * n) + b"\n",
    "task-lines": lambda n: (b"[ 1.0] INFO: task " * 110 + b"\n") * (520 * n),
    "no-newline": lambda n: b"x" * (1_048_576 * n),
}


def _hostile(mb: int) -> dict[str, Any]:
    """Seconds per MB, whole-log parse and streaming detector, per hostile input."""
    out: dict[str, Any] = {}
    for name, make in HOSTILE.items():
        data = make(mb)
        size = len(data) / 1e6
        start = time.perf_counter()
        parse_log(data)
        whole = time.perf_counter() - start
        parser = ConsoleParser()
        start = time.perf_counter()
        for pos in range(0, len(data), 4096):
            parser.feed(data[pos : pos + 4096])
        parser.close()
        stream = time.perf_counter() - start
        out[name] = {"mb": round(size, 2), "whole_s_per_mb": round(whole / size, 3),
                     "stream_s_per_mb": round(stream / size, 3)}
    return out


_SHAPES: tuple[Callable[[int, str], str], ...] = (
    lambda i, ln: f"Nov 30 12:{i // 60 % 60:02d}:{i % 60:02d} node17 kernel: {ln}",
    lambda i, ln: f"2026-11-30T12:00:{i % 60:02d}.{i % 999999:06d}+0000 node17 kernel: {ln}",
    lambda i, ln: f"\x1b[0m{ln}\x00\r",
    lambda i, ln: ln + "\r",
)
_FIRMWARE = (
    "WARNING: RO_VPD is uninitialized or empty.", "WARNING: Caches not enabled",
    "INFO:    BL31: Initializing runtime services", "NOTICE:  BL31: v2.5(release)",
    "Nov 30 12:00:01 node17 systemd[1]: Started Journal Service.",
    "Nov 30 12:00:01 node17 sshd[812]: WARNING: user at host.c:1 blah",
)


def _noisy_log(target_mb: int) -> bytes:
    """Field logs and recorded boots in real-machine shapes, with firmware noise between."""
    sources = sorted((FIXTURES.parent / "field").glob("*.log")) + sorted(FIXTURES.glob("*.log"))
    lines = [ln for p in sources for ln in p.read_text(errors="replace").splitlines()]
    out: list[str] = []
    size = i = 0
    while size < target_mb * 1_000_000:
        ln = lines[i % len(lines)]
        shaped = _SHAPES[(i // 500) % len(_SHAPES)](i, ln)
        out.append(shaped)
        if i % 97 == 0:
            out.append(_FIRMWARE[i % len(_FIRMWARE)])
        size += len(shaped) + 1
        i += 1
    return ("\n".join(out) + "\n").encode()


def _noisy_throughput(target_mb: int, repeat: int) -> dict[str, Any]:
    data = _noisy_log(target_mb)
    with tempfile.NamedTemporaryFile(dir="/var/tmp", suffix=".log") as fh:
        fh.write(data)
        fh.flush()
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            parse_file(Path(fh.name))
            best = min(best, time.perf_counter() - start)
    return {"bytes": len(data), "triage_mb_s": round(len(data) / best / 1e6, 1),
            "stream_mb_s": round(_stream_throughput(data, 4096, repeat), 1)}


#: VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork and execve, so a child would
#: report the bench's own peak; VmHWM belongs to the new address space.
_PEAK_CHILD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from reprolab.detect.logfile import parse_file\n"
    "t = time.perf_counter()\n"
    "rep = parse_file(Path(sys.argv[1]))\n"
    "t = time.perf_counter() - t\n"
    "hwm = next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:'))\n"
    "print(hwm, t, rep and rep.title)\n"
)


def _peak_memory_1gb(gb: float) -> dict[str, Any]:
    """Max RSS of a fresh process triaging a generated log of ``gb`` GB (deleted after)."""
    # Crash-free noise (marker lines dropped), the field report once in the middle.
    noise = b"\n".join(ln for ln in _noisy_log(8).split(b"\n")
                       if not _MARKER_RE.search(ln)) + b"\n"
    crash = (FIXTURES.parent / "field" / "el7-3.10-hard-lockup-cpu50-with-crash-bt.log"
             ).read_bytes()
    fd, name = tempfile.mkstemp(dir="/var/tmp", prefix="reprolab-bench-", suffix=".log")
    try:
        with os.fdopen(fd, "wb") as fh:
            total = int(gb * 1e9)
            written = 0
            while written < total:
                if written >= total // 2 > written - len(noise):
                    fh.write(crash)
                fh.write(noise)
                written += len(noise)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, "-c", _PEAK_CHILD, name], env=env, check=True,
                              capture_output=True, text=True)
        rss_kb, secs, *title = done.stdout.split(" ", 2)
        size = os.path.getsize(name)
    finally:
        os.unlink(name)
    return {"bytes": size, "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            "seconds": round(float(secs), 1), "mb_s": round(size / float(secs) / 1e6, 1),
            "title": " ".join(title).strip()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hostile-mb", type=int, default=1, help="size of each hostile input")
    ap.add_argument("--big-gb", type=float, default=1.0, help="size of the big log (GB)")
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
    hostile = _hostile(args.hostile_mb)
    results["hostile_worst_whole_s_per_mb"] = max(v["whole_s_per_mb"] for v in hostile.values())
    results["hostile_worst_stream_s_per_mb"] = max(v["stream_s_per_mb"]
                                                   for v in hostile.values())
    results["normal_whole_s_per_mb"] = round(1 / results["report_mb_s"], 3)
    results["normal_stream_s_per_mb"] = round(1 / results["stream_mb_s"], 3)
    results["hostile"] = hostile
    results["noisy_real_machine"] = _noisy_throughput(16, args.repeat)
    results["big_log"] = _peak_memory_1gb(args.big_gb)
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
        elif isinstance(value, dict):
            for k2, v2 in value.items():
                print(f"{key + '.' + k2:<{width}}  {v2}")
        else:
            print(f"{key:<{width}}  {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "parser.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
