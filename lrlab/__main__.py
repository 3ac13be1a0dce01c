"""``python -m lrlab``: the same as ``python -m lrlab.run``."""

from lrlab import interrupt

interrupt.install()  # Ctrl-C is a stop request from the first line on

from lrlab.run import main  # noqa: E402

main()
