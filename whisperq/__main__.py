"""`python -m whisperq`: the `whisperq` command."""

from whisperq.cli import main

main()
