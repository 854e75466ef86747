"""Pure data: the config schema, architectures, Debian releases, the package selection
and the boot-menu model; no I/O, and nothing of the other layers.
"""
