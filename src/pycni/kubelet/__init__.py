"""The kubelet's gRPC APIs that pycni speaks: the device plugin API (v1beta1) and PodResources (v1).

The .proto files are written here from the API's wire contract (field numbers and names must match the
kubelet's exactly); the *_pb2*.py stubs beside them are generated from them by `scripts/gen-protos.sh`
and a test checks that they are current. Importing any of them needs the `devices` extra (grpcio,
protobuf); no CNI plugin imports this package unless its config asks for the kubelet (resourceName).
"""

# Where the kubelet serves PodResources (importing this constant loads no gRPC).
PODRESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
