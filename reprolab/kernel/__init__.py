"""Kernels under test: the host's stock Debian kernel, or one built from a tree."""
