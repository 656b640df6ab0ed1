"""Tools that sit above the libraries: fault injection (and, later, benchmarks)."""
