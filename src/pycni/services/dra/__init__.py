"""The node side of Dynamic Resource Allocation: a DRA driver's kubelet plugin (registration, the kubelet's
DRA gRPC API, prepared claims checkpointed on the node, their CDI specs) on a typed model that third
parties use through `pycni.dra`."""
