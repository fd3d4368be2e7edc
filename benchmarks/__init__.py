"""Benchmarks run by ``make bench``; each writes JSON (+ Markdown, PNG) to bench_results/."""
