"""The pipeline of one run: data -> segment -> detect -> evaluate, each stage a function in its own module."""
