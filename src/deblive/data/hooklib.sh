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

: "${DEBLIVE_ROOT:?DEBLIVE_ROOT is not set: source this library from a deblive hook}"

# dl_chroot CMD [ARG...]: run a command inside the image, clean environment.
dl_chroot() {
    chroot "$DEBLIVE_ROOT" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 LANG=C.UTF-8 TERM=dumb \
        DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true \
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

# dl_write PATH [MODE]: write standard input to PATH inside the image.
dl_write() {
    _dl_path="$DEBLIVE_ROOT/${1#/}"
    mkdir -p "$(dirname "$_dl_path")"
    cat > "$_dl_path"
    chmod "${2:-0644}" "$_dl_path"
}

# dl_append PATH: append standard input to PATH inside the image.
dl_append() {
    _dl_path="$DEBLIVE_ROOT/${1#/}"
    mkdir -p "$(dirname "$_dl_path")"
    cat >> "$_dl_path"
}

# dl_enable UNIT...: enable systemd units in the image (no running systemd needed).
dl_enable() {
    dl_chroot systemctl enable "$@"
}

# dl_log MESSAGE: a line in the build log, marked as the hook's.
dl_log() {
    printf 'hook: %s\n' "$*"
}
