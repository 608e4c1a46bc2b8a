"""`python -m bench`: the benchmark suite (bench/suite.py)."""

from .suite import main

main()
