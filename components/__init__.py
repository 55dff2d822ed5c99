"""One ComponentResource per module; `__main__.py` wires them together."""
