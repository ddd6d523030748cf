"""`python -m edgemed` runs the CLI."""

from edgemed.cli import main

main()
