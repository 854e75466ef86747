"""Foundations every layer uses: errors and exit codes, the build log, the one process
runner, signals, files (locks, digests, atomic writes), one HTTP GET.
"""
