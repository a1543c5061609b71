"""Lumbar spine: level labelling and canal measurements from spine label maps."""
