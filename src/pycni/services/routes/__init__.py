"""The routes agent (`pycni routes`): every other node's pod CIDRs routed from this one, directly to
neighbours on the uplink's subnet, over VXLAN to the rest. The constants below name what is the agent's
on a node (and cost no import: the CLI shows them as defaults)."""

VTEP_ANNOTATION = "pycni.io/vtep-mac"  # on each Node object: its VXLAN device's MAC
VXLAN_DEVICE = "pycni.vxlan"
VXLAN_VNI = 4097
VXLAN_PORT = 4789  # IANA's; the 8472 of flannel and Cilium stays free for a migration
ROUTE_PROTOCOL = 114  # `proto 114` on every route the agent makes; nothing else on a node uses it
VXLAN_OVERHEAD = {4: 50, 6: 70}  # outer IP + UDP + VXLAN + inner Ethernet, by the underlay's family
