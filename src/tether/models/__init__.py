"""Hugging Face models: loading, LoRA, chat templates, log-probs, reward heads, generation."""
