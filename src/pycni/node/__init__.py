"""The operator's side of pycni: the `pycni` command, a runtime that runs conflists as libcni does,
node status, installation and the demo. Never on a plugin's hot path."""
