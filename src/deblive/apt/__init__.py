"""Debian archives: signatures, sources, package resolution (the plan), mirror faults
and the package cache.
"""
