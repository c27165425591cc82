"""Bisection of flaky kernel bugs: sequential per-commit decisions driving ``git bisect run``."""
