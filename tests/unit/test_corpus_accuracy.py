"""Accuracy on syzkaller's console-log corpus: every crash found, no false alarm, exact titles.

Prints the figures (run with ``-s`` to see them) and fails below the thresholds. The corpus
lives beside the checkout (``<checkout>/../shared/corpus``) or where REPROLAB_CORPUS points.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.detect.accuracy import corpus_path, load_corpus, measure

MIN_DETECTED = 1.0
MAX_FALSE_POSITIVES = 0
MIN_EXACT_TITLES = 0.99


def test_corpus_accuracy() -> None:
    path = corpus_path(Path(__file__))
    if not path.exists():
        pytest.skip(f"console corpus not present at {path} (set REPROLAB_CORPUS)")
    m = measure(load_corpus(path))
    print(
        f"\ncorpus: {m['logs']} logs, {m['crashes']} crashes: detected {m['detected']:.1%}, "
        f"false positives {m['false_positives']}, exact titles {m['exact_titles']:.1%}, "
        f"corrupted flag {m['corrupted_flag']:.1%}"
    )
    for miss in m["misses"]:
        print("  " + miss)
    assert m["detected"] >= MIN_DETECTED, "crashes missed"
    assert m["false_positives"] <= MAX_FALSE_POSITIVES, "false positives"
    assert m["exact_titles"] >= MIN_EXACT_TITLES, "too few exact titles"
