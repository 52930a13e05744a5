"""Shared training-loop mechanics, written once so recipes cannot drift apart:
optimizer and schedule, deterministic resumable batching, gradient accumulation with
correct token weighting across micro-batches and processes, checkpoint and resume."""
