"""Benchmarks: ``make bench`` runs the side-by-side suite in :mod:`benchmarks.run`."""
