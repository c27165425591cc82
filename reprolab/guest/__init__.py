"""Guests under libvirt: the spec, its domain XML, and the running domain."""
