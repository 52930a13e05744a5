"""Evaluation: prompt suites, pluggable scorers, honest statistics, reports.

An eval is a prompt suite + generation settings + scorers -> per-sample records and aggregate
metrics (each with n and a 95% interval). ``tether.evals.run`` is the recipe behind
``tether eval``; ``tether.evals.compare`` puts several runs side by side with paired tests.
"""
