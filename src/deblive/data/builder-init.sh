#!/bin/sh
# deblive-builder-init: PID 1 of deblive's throwaway builder VM.
#
# It does what an init must for one job and nothing else: mount the kernel's
# file systems, bring up qemu's user network, mount the host's shares, run the
# one deblive command the host wrote, hand back its exit status, power off.
# No systemd: a builder that boots in seconds under KVM and wastes little
# under TCG.
#
# The host talks through the 9p share tagged "dlctl" (read-only here):
#   mounts  one share per line: TAG PATH ro|rw
#   env     shell assignments exported for the build (http_proxy: the only way out)
#   run     the deblive command line (a shell script)
# and reads back from the share mounted at $RESULT:
#   status  the command's exit status (written last)
#   failed/ the failed build's log, report and apt logs (its work disk is thrown away)
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
LANG=C.UTF-8
TERM=dumb
COLUMNS=200
export PATH HOME LANG TERM COLUMNS
CTL=/run/deblive-ctl
RESULT=/run/deblive-result
SCRATCH=/var/tmp/deblive-builder

say() { echo "deblive-builder: $*"; }

power_off() {
    sync
    echo 1 > /proc/sys/kernel/sysrq
    echo o > /proc/sysrq-trigger
    sleep 600
}

fail() {
    say "error: $*"
    if mountpoint -q "$RESULT"; then
        echo 125 > "$RESULT/status.new" && mv "$RESULT/status.new" "$RESULT/status"
    fi
    power_off
}

# The initramfs hands over /dev, /proc and /sys already mounted; booted
# without one they are mounted here.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -o remount,rw / || fail "cannot make / writable"
hostname deblive-builder
say "up after $(cut -d' ' -f1 /proc/uptime) s"

# No udev: load what qemu's devices need by hand.
for module in virtio_pci virtio_net virtio_rng virtio_blk 9pnet_virtio 9p ext4 loop \
              binfmt_misc squashfs isofs vfat; do
    modprobe -q "$module" 2>/dev/null
done

mkdir -p "$CTL"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro dlctl "$CTL" \
    || fail "cannot mount the control share"

# qemu's user network, restricted: the host's proxy (http_proxy in env) is the
# only address that answers, so there is no name server to ask either.
ip link set lo up
dev=""
for path in /sys/class/net/*; do
    name=${path##*/}
    [ "$name" = lo ] || { dev=$name; break; }
done
[ -n "$dev" ] || fail "no network interface"
ip link set "$dev" up
ip addr add 10.0.2.15/24 dev "$dev"
ip route add default via 10.0.2.2
: > /etc/resolv.conf

# Foreign architectures: qemu-user through binfmt_misc.
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null
if command -v update-binfmts > /dev/null; then
    update-binfmts --enable > /dev/null 2>&1
fi
for conf in /usr/lib/binfmt.d/*.conf; do
    [ -f "$conf" ] || continue
    grep -v '^[#;]' "$conf" | while read -r line; do
        [ -n "$line" ] && echo "$line" > /proc/sys/fs/binfmt_misc/register 2>/dev/null
    done
done

# The work disk: fresh for every build.
mkdir -p "$SCRATCH"
mke2fs -q -t ext4 -F /dev/vdb || fail "cannot format the work disk"
mount /dev/vdb "$SCRATCH" || fail "cannot mount the work disk"

# The host's directories: configs and hooks read-only at the host's own paths
# (named the same inside and out), the result, output and cache shares.
while read -r tag path mode; do
    [ -n "$tag" ] || continue
    opts=trans=virtio,version=9p2000.L,msize=262144,cache=none
    [ "$mode" = ro ] && opts=$opts,ro
    mkdir -p "$path"
    mount -t 9p -o "$opts" "$tag" "$path" || fail "cannot mount share $tag at $path"
done < "$CTL/mounts"

set -a
. "$CTL/env"
set +a

# A build can be silent for minutes under TCG (an initramfs, a squashfs):
# say every two minutes what runs, so a slow guest is told from a stuck one.
(
    while sleep 120; do
        say "busy: $(top -b -n 1 -w 200 | awk 'NR > 7 && NR <= 10 { printf "%s %s%%; ", $12, $9 }')"
    done
) &
watcher=$!

say "running the build"
{ sh "$CTL/run" < /dev/null; echo $? > /tmp/status; } 2>&1 | cat
status=$(cat /tmp/status)
kill "$watcher" 2>/dev/null
say "the build ended with status $status"
if [ "$status" != 0 ] && [ -d "$SCRATCH/work" ]; then
    mkdir -p "$RESULT/failed"
    for item in build.log report.json output/logs/*; do
        [ -f "$SCRATCH/work/$item" ] && cp "$SCRATCH/work/$item" "$RESULT/failed/" 2>/dev/null
    done
fi
sync
echo "$status" > "$RESULT/status.new" && mv "$RESULT/status.new" "$RESULT/status"
tac "$CTL/mounts" | while read -r tag path mode; do
    [ -n "$tag" ] && umount "$path" 2>/dev/null
done
umount "$SCRATCH" 2>/dev/null
umount "$CTL" 2>/dev/null
power_off
