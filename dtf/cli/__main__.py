"""`python -m dtf.cli`, the same as `python -m dtf` and the `dtf` script."""

from . import main

main()
