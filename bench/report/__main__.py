"""`python -m bench.report`."""

import sys

from bench.errors import cli_main
from bench.report import main

if __name__ == "__main__":
    sys.exit(cli_main(main)())
