"""The real CLI, started on a signal from the test: ``python barrier_cli.py [overrides...]``.

Each process imports lrlab, prints ``ready`` and waits for a line on stdin; the test sends that line to
all of them at once, so that several processes reach store creation together instead of by luck.
"""

import sys

import lrlab.run

if __name__ == "__main__":
    sys.argv = ["lrlab.run", *sys.argv[1:]]
    print("ready", flush=True)
    sys.stdin.readline()
    lrlab.run.main()
