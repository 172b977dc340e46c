"""Example programs that embed the device runtime (see examples/README.md)."""
