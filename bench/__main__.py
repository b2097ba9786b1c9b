"""`python -m bench [--quick] [--repeats N]`: every scenario, one table."""
from bench.run import main

main()
