"""The alerts service layer: the claim pipeline and the delivery runner, over the ports in `ports`."""
