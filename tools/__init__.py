"""Command-line tools above the libraries and runners: benchmarks, cost benchmarks, run comparison, tables across evaluations, fault injection, FID weights."""
