"""``python -m adapters.cli``: the same as the `sluice` console script."""

from adapters.cli import main

main()
