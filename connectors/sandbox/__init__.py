"""The channel sandbox: plays each channel over its real protocol on loopback."""
