"""Benchmarks: drive a real harness against a deployed pattern, keep every run, compare runs."""
