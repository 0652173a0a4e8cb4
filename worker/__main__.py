"""`python -m worker`: run one worker."""

import sys

from whisperq.cli import main

main(["worker", *sys.argv[1:]])
