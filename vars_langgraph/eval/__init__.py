"""Evaluation: the multi-session learning benchmark on MultiSessionCollab (`eval collab`)."""

from vars_langgraph.eval.runner import METHODS, collab_main, run_benchmark

__all__ = ["METHODS", "collab_main", "run_benchmark"]
