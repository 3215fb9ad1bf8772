"""Helpers shared by the runner tests: tiny data, tiny configs, a temp MLflow store."""
