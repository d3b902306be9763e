#!/usr/bin/env bash
# Installs what FR-APIaaS needs on a Debian machine and fetches the pinned
# third-party artifacts (ONNX Runtime, face models, sample photos) into
# .deps/.  Every artifact is checked against scripts/artifacts.lock; a
# mismatch stops the setup.  A second run with everything in place does
# nothing.  ORT_HOME may name an existing ONNX Runtime install (with
# include/ and lib/) to use instead of the npm one.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
deps="$root/.deps"
lock="$root/scripts/artifacts.lock"

apt_packages=(
	build-essential pkg-config clang clang-format libclang-rt-14-dev
	libmicrohttpd-dev libjansson-dev libsqlite3-dev libpq-dev
	libsodium-dev libjwt-dev liboath-dev libvips-dev
	libcurl4-openssl-dev libcmocka-dev libqrencode-dev imagemagick sqlite3
	libimage-exiftool-perl wrk libgs-common openssl
)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

install_packages() {
	local missing=() p
	for p in "${apt_packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	# Node.js runs the end-to-end tests; a machine may already have its
	# own build, which Debian's npm package would conflict with.
	command -v node >/dev/null && command -v npm >/dev/null ||
		missing+=(nodejs npm)
	[ ${#missing[@]} -eq 0 ] && return 0
	say "installing Debian packages: ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# check FILE SHA256 NAME: stop unless FILE has the pinned digest.
check() {
	local got
	got=$(sha_of "$1")
	[ "$got" = "$2" ] ||
		die "$3: SHA-256 mismatch (expected $2, got $got); refusing it"
}

# Destination of one pinned file, by its kind.
dest_of() {
	case "$1" in
	ort) case "$2" in *.h) echo "$deps/ort/include/$2" ;;
		*) echo "$deps/ort/lib/$2" ;; esac ;;
	model) echo "$deps/models/$2" ;;
	photo) echo "$deps/photos/$2" ;;
	esac
}

all_present() {
	local kind name sha path
	[ -f "$deps/.lock" ] && cmp -s "$deps/.lock" "$lock" || return 1
	while read -r kind name sha path; do
		case "$kind" in ''|'#'*|tarball) continue ;; esac
		[ "$kind" = ort ] && [ -n "${ORT_HOME:-}" ] && continue
		[ -f "$(dest_of "$kind" "$name")" ] || return 1
	done <"$lock"
}

fetch_artifacts() {
	local tmp kind name sha path tgz dir
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	mkdir -p "$deps/cache" "$deps/ort/include" "$deps/ort/lib" \
		"$deps/models" "$deps/photos"

	# Tarballs first: fetched once into the cache, checked every time.
	while read -r kind name sha path; do
		[ "$kind" = tarball ] || continue
		[ "$name" = com.github.asus4.onnxruntime@0.4.9 ] &&
			[ -n "${ORT_HOME:-}" ] && continue
		tgz="$deps/cache/$(echo "$name" | tr '/@' '__').tgz"
		if [ ! -f "$tgz" ] || [ "$(sha_of "$tgz")" != "$sha" ]; then
			say "fetching $name from the npm registry"
			(cd "$tmp" && npm pack --silent "$name" >pack.out) ||
				die "npm pack $name failed"
			mv "$tmp/$(tail -n1 "$tmp/pack.out")" "$tgz"
		fi
		check "$tgz" "$sha" "$name"
		dir="$tmp/$(basename "$tgz" .tgz)"
		mkdir -p "$dir"
		tar -xzf "$tgz" -C "$dir"
	done <"$lock"

	# Then every file we use, checked again after extraction.
	while read -r kind name sha path; do
		case "$kind" in ''|'#'*|tarball) continue ;; esac
		[ "$kind" = ort ] && [ -n "${ORT_HOME:-}" ] && continue
		local src
		src=$(find "$tmp" -path "*/package/$path" -print -quit)
		[ -n "$src" ] || die "$name not found in its package ($path)"
		check "$src" "$sha" "$name"
		install -m 0644 "$src" "$(dest_of "$kind" "$name")"
	done <"$lock"

	# The library's SONAME is libonnxruntime.so.1.
	[ -z "${ORT_HOME:-}" ] &&
		ln -sf libonnxruntime.so "$deps/ort/lib/libonnxruntime.so.1"
	cp "$lock" "$deps/.lock"
}

install_packages
if all_present; then
	exit 0
fi
fetch_artifacts
say "artifacts ready in $deps"
