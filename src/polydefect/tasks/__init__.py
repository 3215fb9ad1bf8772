"""LightningModules: each is given its net and owns the loss, the optimizer and the logging."""
