"""`python -m pipeline.cli …`: the same command line as the `tracemill` script."""

from pipeline.cli.main import main

main()
