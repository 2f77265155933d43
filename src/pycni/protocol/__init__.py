"""The CNI protocol: env and stdin in, a result or an error out.

Every plugin goes through this package and nothing here knows about netlink,
nftables or any particular plugin.
"""
