"""Benchmarks: suites of tasks, a resumable runner, metrics and reports."""
