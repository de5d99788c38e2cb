# SPDX-License-Identifier: MIT
# Shared by scripts/demo and scripts/test: install what a fresh Debian 12
# (or Ubuntu) machine lacks, and configure a build directory.

QUAY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Debian packages quay needs to build, test and benchmark.
QUAY_PACKAGES=(
	meson ninja-build pkg-config gcc g++ clang libclang-rt-14-dev clang-format-14 python3
	libck-dev liburcu-dev libcmocka-dev libbenchmark-dev relacy-dev
	libzmq3-dev libsqlite3-dev spin
	libnats-dev nats-server openssl
	libmicrohttpd-dev prometheus chromium
	libxxhash-dev
	libuv1-dev
	gnuplot-nox
	librocksdb-dev
)

note() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Install whichever of QUAY_PACKAGES is missing (apt-get, as root or sudo).
quay_install_deps() {
	local missing=() p sudo=
	for p in "${QUAY_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		note "all Debian packages present"
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; return 1; }
		sudo=sudo
	fi
	note "installing: ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# quay_setup DIR [meson options...]: configure DIR, or reconfigure it with
# the given options if it exists.
quay_setup() {
	local dir=$1; shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
}
