"""Kernel and OS wrappers the plugins share: netlink (the only pyroute2 importer), nftables (the only
libnftables user), tc, network namespaces, sysctls, conntrack and file locks. Nothing here knows CNI
plugins; a new wrapper of a kernel facility goes here."""
