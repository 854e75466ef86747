#!/bin/sh
# Customisation hook for examples/ssh-server.yaml. deblive runs it with the
# image's root directory as its only argument, with proc mounted, services
# blocked and apt pointing at the build mirror.
set -eu
root="$1"
. "$DEBLIVE_LIB"

dl_log "customising $DEBLIVE_NAME ($DEBLIVE_SUITE/$DEBLIVE_ARCH) in $root"

# A message of the day that says what this is.
dl_write /etc/motd 0644 <<MOTD
Debian live image "$DEBLIVE_NAME" ($DEBLIVE_SUITE, $DEBLIVE_ARCH), built by deblive.
The live user is $DEBLIVE_USER; root's password is locked, use sudo.
MOTD

# Let the live user log in over SSH with the password (it is a live image).
dl_write /etc/ssh/sshd_config.d/deblive-live.conf 0644 <<'SSHD'
PasswordAuthentication yes
SSHD
