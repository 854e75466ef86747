"""qemu firmware descriptors (docs/interop/firmware.json) for firmware-selection tests."""

import json


def descriptor(code: str, template: str, features: list[str], machines: list[str],
               arch: str = "x86_64") -> str:
    """A flash-mapped UEFI descriptor, as Debian's ovmf and qemu-efi packages ship them."""
    return json.dumps(
        {
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": template, "format": "raw"},
            },
            "targets": [{"architecture": arch, "machines": machines}],
            "features": features,
        }
    )
