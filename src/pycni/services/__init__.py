"""Long-running node services: `cni` keeps the CNI plugins warm behind a unix socket (the plugin
executables are its thin clients); a new kind of node service gets a package beside it."""
