"""Judging a model against the truth: the instruments, the evaluation, its report and figures."""
