"""reprolab: reproduce Linux kernel and KVM faults on demand, with the evidence captured."""

__version__ = "0.1.0"
