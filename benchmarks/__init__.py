"""Benchmark harness: CLI, runner, evaluator, efficiency, tuning and reporting (last stage of the data flow)."""
