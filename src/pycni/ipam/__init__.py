"""Address management shared by the host-local IPAM plugin and its callers."""
