#!/usr/bin/env bash
# The imagefs demo: a small image store made locally with podman (no
# registry, no network), mounted at ./demo/mnt.
#
#   scripts/demo.sh start   build the store if needed, (re)mount it, print a tour
#   scripts/demo.sh stop    unmount
#   scripts/demo.sh clean   unmount and delete ./demo
#
# `make demo` / `make demo-stop` / `make demo-clean` call this after
# installing the packages and building bin/imagefs.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/demo
STORE=$DEMO/store
GRAPH=$STORE/graph
MNT=$DEMO/mnt
LOG=$DEMO/imagefs.log
CONF=$DEMO/storage.conf
BIN=$ROOT/bin/imagefs
# Bump when the demo's content changes: an older store is rebuilt.
DEMO_VERSION=1
STAMP=$STORE/.demo-version

# podman refuses a runroot longer than 50 characters.
RUN=$STORE/run
if [ ${#RUN} -gt 50 ]; then
	RUN=/run/imagefs-demo-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
fi

# Both podman and imagefs read this file (CONTAINERS_STORAGE_CONF), so no
# storage.conf of the machine changes what the demo sees.
write_conf() {
	mkdir -p "$DEMO"
	cat >"$CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$GRAPH"
runroot = "$RUN"
EOF
}
export CONTAINERS_STORAGE_CONF=$CONF

STORE_FLAGS=(--root "$GRAPH" --runroot "$RUN" --storage-driver overlay)
pm() { podman "${STORE_FLAGS[@]}" "$@"; }

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts; }

stop() {
	if is_mounted "$MNT"; then
		if [ -x "$BIN" ]; then
			"$BIN" umount "$MNT" || "$BIN" umount --lazy "$MNT"
		else
			umount "$MNT" || umount -l "$MNT"
		fi
		say "demo: unmounted $MNT"
	fi
}

# unmount_all_under DIR: anything still mounted below DIR (deepest first).
unmount_all_under() {
	awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

clean() {
	stop
	unmount_all_under "$DEMO"
	rm -rf "$DEMO"
	case $RUN in /run/imagefs-demo-*) rm -rf "$RUN" ;; esac
	say "demo: removed $DEMO"
}

# make_base_tree DIR ARCH: the files of the base image.
make_base_tree() {
	local d=$1 arch=$2
	mkdir -p "$d/etc" "$d/bin" "$d/usr/bin" "$d/usr/share/demo" "$d/var/empty" "$d/tmp"
	cat >"$d/etc/os-release" <<EOF
NAME="imagefs demo"
ID=imagefs-demo
VERSION_ID=$DEMO_VERSION
PRETTY_NAME="imagefs demo base ($arch)"
EOF
	echo demo >"$d/etc/hostname"
	printf 'Welcome to the imagefs demo base image.\n' >"$d/etc/motd"
	printf '#!/bin/sh\necho "hello from the imagefs demo"\n' >"$d/bin/hello"
	chmod 0755 "$d/bin/hello"
	ln -s ../../bin/hello "$d/usr/bin/hello"
	for i in $(seq 1 200); do echo "line $i of a file that every image built on the base shares"; done >"$d/usr/share/demo/shared.txt"
	chmod 1777 "$d/tmp"
}

build_store() {
	command -v podman >/dev/null || die "podman is not installed (make demo installs it)"
	local b=$DEMO/build
	unmount_all_under "$STORE"
	rm -rf "$STORE" "$b"
	mkdir -p "$GRAPH" "$RUN" "$b"
	say "demo: building images in $STORE (locally, no registry)"

	# 1. A base image from a tarball, with two names.
	make_base_tree "$b/base" amd64
	tar --numeric-owner --owner=0 --group=0 -C "$b/base" -cf "$b/base.tar" .
	pm import -q --arch amd64 --os linux \
		--change 'CMD ["/bin/hello"]' \
		--change 'LABEL org.opencontainers.image.title="imagefs demo base"' \
		"$b/base.tar" localhost/demo/base:1.0 >/dev/null
	pm tag localhost/demo/base:1.0 localhost/demo/base:latest

	# 2. An app on top of it: base + 1 layer, then 1.1 = base + 2 layers.
	#    The first 1.1 build is replaced by a second one, which leaves it
	#    nameless: a dangling image that shares two layers with 1.1.
	mkdir -p "$b/app/opt/app"
	printf '{"greeting": "hello", "workers": 4}\n' >"$b/app/opt/app/config.json"
	printf '#!/bin/sh\nexec /bin/hello "$@"\n' >"$b/app/opt/app/run"
	chmod 0755 "$b/app/opt/app/run"
	cat >"$b/app/Containerfile" <<'EOF'
FROM localhost/demo/base:1.0
COPY opt/app/ /opt/app/
ENV APP_MODE=demo
WORKDIR /opt/app
LABEL org.opencontainers.image.title="imagefs demo app"
CMD ["/opt/app/run"]
EOF
	pm build -q --pull=never --layers=false -t localhost/demo/app:1.0 "$b/app" >/dev/null

	mkdir -p "$b/app11/opt/app"
	cat >"$b/app11/Containerfile" <<'EOF'
FROM localhost/demo/app:1.0
COPY VERSION /opt/app/VERSION
LABEL org.opencontainers.image.version="1.1"
EOF
	echo "1.1-rc1" >"$b/app11/VERSION"
	pm build -q --pull=never --layers=false -t localhost/demo/app:1.1 "$b/app11" >/dev/null
	echo "1.1" >"$b/app11/VERSION"
	pm build -q --pull=never --layers=false -t localhost/demo/app:1.1 "$b/app11" >/dev/null

	# 3. A second image on the same base (they share its layer).
	mkdir -p "$b/tools/usr/local/bin"
	printf '#!/bin/sh\nls -l "$@"\n' >"$b/tools/usr/local/bin/ll"
	chmod 0755 "$b/tools/usr/local/bin/ll"
	cat >"$b/tools/Containerfile" <<'EOF'
FROM localhost/demo/base:1.0
COPY usr/ /usr/
LABEL org.opencontainers.image.title="imagefs demo tools"
EOF
	pm build -q --pull=never --layers=false -t localhost/demo/tools:1.0 "$b/tools" >/dev/null

	# 4. The base for another architecture, and a manifest list of both
	#    platforms, as `podman manifest` stores it (an image without layers).
	make_base_tree "$b/base-arm64" arm64
	tar --numeric-owner --owner=0 --group=0 -C "$b/base-arm64" -cf "$b/base-arm64.tar" .
	pm import -q --arch arm64 --variant v8 --os linux "$b/base-arm64.tar" localhost/demo/base-arm64:1.0 >/dev/null
	pm manifest create localhost/demo/multi:1.0 >/dev/null
	pm manifest add localhost/demo/multi:1.0 containers-storage:localhost/demo/app:1.1 >/dev/null
	pm manifest add localhost/demo/multi:1.0 containers-storage:localhost/demo/base-arm64:1.0 >/dev/null

	rm -rf "$b"
	echo "$DEMO_VERSION" >"$STAMP"
	say "demo: store ready:"
	pm images -a
}

# full_id NAME: the ID of the image holding exactly this name (not, for a
# manifest list, the instance `podman image inspect` would resolve it to).
full_id() {
	pm images -a --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' |
		awk -v n="$1" '$2 == n { sub(/^sha256:/, "", $1); print $1; exit }'
}

tour() {
	local app list dangling m=demo/mnt n=demo/mnt/names/localhost/demo
	app=$(full_id localhost/demo/app:1.1)
	list=$(full_id localhost/demo/multi:1.0)
	dangling=$(pm images -a --no-trunc --filter dangling=true --format '{{.ID}}' | head -n1 | sed 's/^sha256://')
	say ""
	say "imagefs is serving the demo store at ./$m (log: demo/imagefs.log). Try:"
	say ""
	try "ls $m" "images/ names/ digests/ layers/ df"
	try "ls $m/images" "one directory per image ID, as podman images -a"
	try "find $m/names -type l" "every name is a symlink to its image"
	try "readlink $n/app:1.1"
	try "cat $n/app:1.1/names"
	try "jq .Config $n/app:1.1/inspect.json" "the JSON podman image inspect prints"
	try "jq . $n/app:1.1/manifest"
	try "sha256sum $n/app:1.1/config" "= the image ID"
	try "cat $n/app:1.1/history"
	try "ls -l $n/app:1.1/layers/" "base first; shared with base, app:1.0 and a dangling image"
	try "cat $n/base/names" "a repository without a tag means :latest"
	try "cat $m/images/${app:0:12}/digest" "any unique ID prefix works"
	try "ls $m/images/${dangling:0:12}" "a dangling (nameless) image: only under images/"
	try "cat $m/images/${list:0:12}/instances/platforms" "a manifest list and its platforms"
	try "ls -l $m/images/${list:0:12}/instances/"
	try "ls $m/digests"
	try "jq . $m/layers/*/info.json | less"
	try "cat $m/df" "podman system df, counted right"
	try "ls -l $n/app:1.1/rootfs/opt/app" "the image's files, read-only"
	say ""
	say "The same store with podman:"
	say "  podman --root $GRAPH --runroot $RUN --storage-driver overlay images -a"
	say ""
	say "Stop with: make demo-stop"
}

# try COMMAND [COMMENT]: one line of the tour.
try() {
	if [ $# -gt 1 ]; then
		printf '  %-58s # %s\n' "$1" "$2"
	else
		printf '  %s\n' "$1"
	fi
}

start() {
	[ "$(id -u)" = 0 ] || die "run as root (FUSE mount of a root-owned image store)"
	[ -x "$BIN" ] || die "$BIN is missing; run make demo (it builds it)"
	stop
	write_conf
	if [ "$(cat "$STAMP" 2>/dev/null)" != "$DEMO_VERSION" ]; then
		build_store
	elif [ -z "$(full_id localhost/demo/app:1.1)" ] || [ -z "$(full_id localhost/demo/multi:1.0)" ]; then
		# The tour needs these names; an earlier session renamed or removed them.
		say "demo: the store no longer has the images the tour shows; rebuilding it"
		build_store
	else
		say "demo: reusing the store in $STORE (make demo-clean rebuilds it)"
	fi
	mkdir -p "$MNT"
	"$BIN" mount "${STORE_FLAGS[@]}" --log-file "$LOG" "$MNT"
	tour
}

case ${1:-start} in
start) start ;;
stop) stop ;;
clean) clean ;;
*) die "usage: $0 start|stop|clean" ;;
esac
