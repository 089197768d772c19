"""svd_triton: thin client, CLI and embedded-server launcher for the svd_xt Triton model."""
