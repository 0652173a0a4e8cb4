"""`python -m benchmark`."""

from benchmark.cli import main

main()
