"""The three LLM steps: structured outputs, prompts, WhatsApp limits, rollout."""
