"""libvirt access: connections, domains, dumps."""
