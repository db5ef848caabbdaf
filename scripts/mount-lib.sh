# Shared by the bench scripts: run `hindsight mount` of $repo at $mnt in the
# background and stop it. Needs HS, repo, mnt, work set; sets mount_pid.
# start_mount [WRAPPER]: WRAPPER (e.g. a cgroup runner) prefixes the command.
start_mount() {
	mkdir -p "$mnt"
	${1:-} "$HS" --repo "$repo" mount "$mnt" 2>>"$work/mount.log" &
	mount_pid=$!
	for _ in $(seq 200); do
		mountpoint -q "$mnt" && return 0
		kill -0 "$mount_pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "$(basename "$0"): the mount did not come up:" >&2
	cat "$work/mount.log" >&2
	return 1
}
stop_mount() {
	if [ -n "${mount_pid:-}" ]; then
		kill -TERM "$mount_pid" 2>/dev/null
		wait "$mount_pid" 2>/dev/null || true
		mount_pid=""
	fi
	if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
}
restart_mount() { stop_mount; start_mount "$@"; }
