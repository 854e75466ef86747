"""What can go wrong with a VM, as errors the boot test and the builder VM tell apart."""

from __future__ import annotations

from deblive.core.errors import DebliveError


class QemuError(DebliveError):
    """qemu could not be started or did something the caller cannot go on from."""


class VMExited(QemuError):
    """qemu ended while the caller still expected output from it."""


class KvmFailure(QemuError):
    """KVM broke inside the guest (internal error) or the guest stalled silently."""


class ExpectTimeout(QemuError):
    """The serial console did not show what was waited for in time."""
