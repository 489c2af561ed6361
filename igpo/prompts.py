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

ARITH_INSTRUCTION = ""
"""Instruction put before the question in the user turn (d1's instruction in the real tasks).

Empty on purpose: a constant prefix tells a model trained from scratch nothing and costs
context, and d1's instruction would be all unknown tokens for the arith tokenizer. Prompts
follow :func:`igpo.data.render_prompt`'s rule: ``instruction + "\\n\\n" + question`` when the
instruction is non-empty, else the question alone.
"""


def source_instruction(source: str, override: str | None) -> str:
    """The prompt instruction for a data source: the override if given, else the source's own."""
    if override is not None:
        return override
    return ARITH_INSTRUCTION if source == "arith" else D1_INSTRUCTION
