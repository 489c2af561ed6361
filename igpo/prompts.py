"""Prompt texts shared by evaluation tasks and training (one copy, so train and eval agree)."""

from __future__ import annotations

D1_INSTRUCTION = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \n"
    "Respond in the following format:\n"
    "<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>"
)
"""d1 / IGPO instruction placed before the question in the user turn."""

PREFILL = "<reasoning>"
"""d1 prefills the assistant turn with this tag; completions continue after it."""
