"""`igpo rewrite-traces`: concise, length-aligned SFT traces rewritten by any OpenAI-compatible
endpoint (a local vLLM / SGLang server or a hosted API), checked, resumable and crash-safe.

rows.py reads the input (field presets, stable row ids, the rewriting prompt), checks.py decides
whether a rewrite is kept, client.py sends one request with retries, run.py is the job.
"""
