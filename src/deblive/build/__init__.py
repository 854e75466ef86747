"""Building an image: the stage protocol, the pipeline and its stages, the chroot, boot
files, menus, installer, report and publishing.
"""
