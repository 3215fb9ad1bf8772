"""The line-side inspection service (`python -m polydefect.serve bundle=<folder>`): an inspection bundle behind
an HTTP API and an operator page, with every inspected batch kept in a database."""
