"""`igpo eval` and what reads its runs: the request, plan and run through lm-eval (`run`),
protocols, run records and their files, provenance, leaderboards, checkpoint series, intervals."""
