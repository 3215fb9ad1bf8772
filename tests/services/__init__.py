"""Real engines for the scale-out tests: a single-node SLURM cluster, PostgreSQL and an MLflow server on loopback.

Each starter is memoised, so a pytest session starts a service once, and stops it when the session's process exits.
"""
