"""The application layer: what the surfaces (CLI, hooks, Action) run — check and fix
pipelines over paths, and the base revision budgets are judged against."""
