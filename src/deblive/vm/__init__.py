"""One qemu layer: firmware, the command line, KVM or TCG with one fallback, the running
machine with its serial console, QMP and screen.
"""
