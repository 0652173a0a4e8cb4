"""`python -m worker`: run one worker."""

import sys

from shared.cli import main

main(["worker", *sys.argv[1:]])
