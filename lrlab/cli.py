"""The ``lrlab`` console script and ``python -m lrlab``: handle Ctrl-C from the start, then ``lrlab.run``."""

from lrlab.sweep import interrupt


def main() -> None:
    interrupt.install()  # Ctrl-C is a stop request from the first line on
    from lrlab.run import main as run_main

    run_main()
