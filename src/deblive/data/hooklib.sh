# deblive hook function library. Source it from a customisation hook:
#
#   #!/bin/sh
#   set -eu
#   . "$DEBLIVE_LIB"
#   dl_install wpasupplicant
#   dl_write /etc/motd 0644 <<'MOTD'
#   Welcome.
#   MOTD
#
# The hook gets the image's root directory as $1 (also $DEBLIVE_ROOT). While it
# runs, proc/sys/dev are mounted in the root, services are blocked and apt
# points at the build mirror, so installing packages works.
#
# Every function works inside the image (through chroot): a path is the
# image's path, and a symlink in the image leads where it leads in the image,
# never to a file of the host. dl_write replaces what is at the path (a
# symlink too) with a regular file.

: "${DEBLIVE_ROOT:?DEBLIVE_ROOT is not set: source this library from a deblive hook}"

# dl_chroot CMD [ARG...]: run a command inside the image, clean environment.
dl_chroot() {
    chroot "$DEBLIVE_ROOT" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 LANG=C.UTF-8 TERM=dumb \
        DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
        ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
        "$@"
}

# dl_install PACKAGE...: apt-get install inside the image, Recommends included,
# no progress bars, every package step logged.
dl_install() {
    dl_chroot apt-get -y -q -o Dpkg::Use-Pty=0 -o APT::Color=0 \
        -o APT::Install-Recommends=true \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        install "$@"
}

# dl_remove PACKAGE...: purge packages from the image.
dl_remove() {
    dl_chroot apt-get -y -q -o Dpkg::Use-Pty=0 purge "$@"
}

# dl_write PATH [MODE]: write standard input to PATH inside the image, as a new
# regular file (what was there, a symlink included, is replaced).
dl_write() {
    dl_chroot /bin/sh -c '
        set -e
        dir=$(dirname "$1")
        mkdir -p "$dir"
        tmp=$(mktemp "$dir/.dl_write.XXXXXX")
        cat > "$tmp"
        chmod "$2" "$tmp"
        mv -f "$tmp" "$1"' dl_write "/${1#/}" "${2:-0644}"
}

# dl_append PATH: append standard input to PATH inside the image.
dl_append() {
    dl_chroot /bin/sh -c '
        set -e
        mkdir -p "$(dirname "$1")"
        cat >> "$1"' dl_append "/${1#/}"
}

# dl_enable UNIT...: enable systemd units in the image (no running systemd needed).
dl_enable() {
    dl_chroot systemctl enable "$@"
}

# dl_log MESSAGE: a line in the build log, marked as the hook's.
dl_log() {
    printf 'hook: %s\n' "$*"
}
