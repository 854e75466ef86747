"""Building inside a throwaway VM of the target release: the cached builder image, its
shares, the mirror-only proxy, the run.
"""
