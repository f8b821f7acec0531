"""LightningModules: thin wiring of the nets, diffusion maths and metrics."""
