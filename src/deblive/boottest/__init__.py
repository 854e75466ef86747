"""Proving an ISO boots: boot modes, login on the serial console, checks and results;
it knows the medium only as a path and the build's boot entries.
"""
