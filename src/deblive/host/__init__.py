"""The build host: its apt sources and release, preflight checks, disk space, the
sandbox (namespaces, mounts) and the only way into an image tree.
"""
