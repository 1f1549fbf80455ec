"""The engine core: configuration, the per-layer reduction engine and its hooks, the token layout, the merge and
prune tensor functions, the budget rule, and the statistics every method reports."""
