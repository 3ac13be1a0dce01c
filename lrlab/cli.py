"""The ``lrlab`` console script: handle Ctrl-C from the start, then the entry point of ``lrlab.run``."""

from lrlab import interrupt


def main() -> None:
    interrupt.install()
    from lrlab.run import main as run_main

    run_main()
