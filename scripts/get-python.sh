#!/usr/bin/env bash
# Fetch a CPython that pyenv does not have, from Debian's binary packages, and
# print the path of its interpreter on the last line of stdout.
#
# Usage: scripts/get-python.sh 3.14        (or 3.15)
#
# Why Debian packages: no Python source tarball can be downloaded on the
# machines this project is tested on, but Debian's package archive can, and
# its unstable suite ("sid") carries the newest CPythons. Those packages are
# built against sid's C library, newer than the machine's own, so they are
# unpacked (never installed: the system is left as it is) into one prefix
# together with the libraries they need, and the interpreter is re-pointed
# with patchelf at the prefix's dynamic loader and library directory. It
# then runs as a normal CPython: multiprocessing's fork, spawn and forkserver
# re-run sys.executable, which carries its loader with it.
#
# The result is cached in $FORKSAFE_PYTHON_CACHE (default: .pythons/ in the
# repository); a second call only prints the path. Everything it does goes to
# stderr; on failure it says why and exits non-zero, printing nothing on
# stdout. Needs apt-get and dpkg-deb (Debian or a derivative), patchelf
# (installed with apt-get when missing and running as root), and a Debian
# mirror in the machine's APT sources.
set -euo pipefail

say() { echo "get-python: $*" >&2; }
die() { say "cannot provide Python ${version:-?}: $*"; exit 1; }

version=${1:-}
[[ $version =~ ^3\.[0-9]+$ ]] || { echo "usage: $0 3.MINOR (e.g. 3.14)" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${FORKSAFE_PYTHON_CACHE:-$root/.pythons}
prefix="$cache/$version"
python="$prefix/usr/bin/python$version"
marker="$prefix/.complete"

# Debian ships no bytecode (its postinst compiles it on install, which
# unpacking skips), and with PYTHONDONTWRITEBYTECODE set none is ever written:
# every start-up of the interpreter then compiled logging, multiprocessing...
# again, 3x the start-up time of a pyenv build, and the suite starts
# thousands of interpreters. Compiled once here, as an install would.
compile_stdlib() {
    local lib="$prefix/usr/lib/python$version"
    "$python" -m compileall -q -j0 -x '/(test|idlelib|lib2to3|tkinter|turtledemo)/' "$lib" >/dev/null \
        && "$python" -m compileall -q "$lib/test/__init__.py" "$lib/test/__main__.py" \
            "$lib/test/support" "$lib/test/libregrtest" "$lib/test/test_logging.py" >/dev/null \
        && touch "$prefix/.compiled"
}

if [ -f "$marker" ] && [ -x "$python" ] && "$python" -c 'pass' 2>/dev/null; then
    if [ ! -f "$prefix/.compiled" ]; then
        say "Python $version: compiling its standard library's bytecode (once)"
        compile_stdlib || die "compileall failed in $prefix"
    fi
    say "Python $version: cached in $prefix"
    echo "$python"
    exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "apt-get and dpkg-deb are needed (this script fetches Debian packages)"
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
if ! command -v patchelf >/dev/null; then
    [ "$(id -u)" = 0 ] || die "patchelf is missing and this is not root to install it (apt-get install patchelf)"
    say "installing patchelf with apt-get"
    { apt-get update -qq && apt-get install -y -qq patchelf; } >&2 || die "apt-get install patchelf failed"
fi

# The Debian mirror the machine already uses, from its deb822 or one-line sources.
mirror=$(
    { cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
          2>/dev/null || true; } \
        | awk '$1 == "URIs:" || $1 == "deb" { print $2 }' | grep -E '/debian/?$' | head -n 1 || true
)
[ -n "$mirror" ] || die "no Debian mirror (a URI ending in /debian) in the APT sources"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"

# A private APT state: sid's package lists never touch the system's.
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
echo "deb [signed-by=$keyring] $mirror sid main" > "$apt_dir/sources.list"
apt_opts=(
    -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache::archives=$apt_dir/archives"
    -o "Dir::Cache=$apt_dir"
    -o "APT::Architecture=$arch"
    -o "Debug::NoLocking=true"
    -o "APT::Sandbox::User=root"  # the cache may be unreadable to _apt
)
say "reading the package list of Debian sid from $mirror"
apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update of sid failed"

packages=(
    "python$version" "python$version-minimal" "libpython$version-minimal"
    "libpython$version-stdlib" "python$version-venv" "libpython$version-testsuite"
    "libpython$version"
    libc6 libgcc-s1 libffi8 libexpat1 zlib1g libzstd1 liblzma5 libbz2-1.0 libuuid1
    libsqlite3-0 libncursesw6 libtinfo6 libreadline8t64 libssl3t64 libcrypt1 libmpdec4
)
rm -f "$apt_dir"/debs/*.deb
say "downloading ${#packages[@]} packages: ${packages[*]}"
(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}") >&2 \
    || die "apt-get download failed (does sid still carry python$version?)"

rm -rf "$prefix.tmp"
mkdir -p "$prefix.tmp"
for deb in "$apt_dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$prefix.tmp"
done
libdir="$prefix/usr/lib/$multiarch"
loader=$(cd "$prefix.tmp/usr/lib/$multiarch" && ls ld-linux*.so.* 2>/dev/null | head -n 1)
[ -n "$loader" ] || die "no dynamic loader in the unpacked libc6"
rm -rf "$prefix"
mv "$prefix.tmp" "$prefix"
# Every ELF program of the interpreter must load sid's libc, not the system's;
# the extension modules load through the interpreter's loader and rpath.
for exe in "$prefix/usr/bin/python$version"; do
    patchelf --set-interpreter "$libdir/$loader" --force-rpath --set-rpath "$libdir" "$exe" \
        || die "patchelf failed on $exe"
done

# A script file, not stdin: spawn's children import the main module again.
check="$prefix/.check.py"
cat > "$check" <<'EOF'
import multiprocessing as mp, sys, venv, ssl, sqlite3, lzma, bz2, zlib, ctypes, test.support

def square(x):
    return x * x

if __name__ == "__main__":
    for method in ("fork", "spawn", "forkserver"):
        with mp.get_context(method).Pool(2) as pool:
            assert pool.map(square, range(4)) == [0, 1, 4, 9], method
    print(sys.version.split()[0], mp.get_start_method())
EOF
out=$(timeout 120 "$python" "$check" 2>&1) || die "the unpacked interpreter does not work: $out"
compile_stdlib || die "compileall failed in $prefix"
touch "$marker"
say "Python $version: CPython ${out% *} (default start method: ${out#* }) ready in $prefix"
echo "$python"
