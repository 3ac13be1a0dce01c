"""``python -m lrlab``: the same as ``python -m lrlab.run``."""

from lrlab.cli import main

main()
