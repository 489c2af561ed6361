"""`igpo ablate`: grids of training runs (`grid`), the runner (`run`), the report and plots
(`report`, `curves`) and the paper's claims tested pairwise (`claims`)."""
