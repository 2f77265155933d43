"""`python -m pycni`: the operator's command, as `pycni`."""

from pycni.node.cli import main

main()
