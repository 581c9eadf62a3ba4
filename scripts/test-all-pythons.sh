#!/usr/bin/env bash
# Run the test suite against the built wheel on every CPython 3.9-3.15.
# Usage: scripts/test-all-pythons.sh [pytest args...]
# An interpreter is looked for in pyenv, then as python3.X on PATH; a version
# found in neither is fetched by scripts/get-python.sh (Debian's packages,
# cached in .pythons/). Says which versions it ran, which it fetched and which
# it skipped; fails if any run failed or if no version was found at all.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)
wheel_dir="$root/dist"
# FORKSAFE_PYTHONS="3.12 3.13" narrows the run to those versions.
read -r -a versions <<< "${FORKSAFE_PYTHONS:-3.9 3.10 3.11 3.12 3.13 3.14 3.15}"
# The suite runs first without structlog (its tests skip, and say why), then
# tests/test_structlog.py runs again with each of these structlog versions:
# the oldest the extra allows, and the newest this Python can install.
# FORKSAFE_STRUCTLOG="" leaves those runs out. A pinned version runs on the
# first Python of the list only (the oldest), unless FORKSAFE_STRUCTLOG_PINNED_ALL=1:
# it is what users of old Pythons have, and it keeps CI well under its limit.
read -r -a structlogs <<< "${FORKSAFE_STRUCTLOG-structlog==21.1.0 structlog}"
# uWSGI is compiled from source, about 20 s per Python: its end-to-end tests
# run on these versions only, and skip (saying why) on the others.
read -r -a uwsgi_versions <<< "${FORKSAFE_UWSGI_PYTHONS-3.12 3.13}"
# The docs' doctests run with every check in `make docs` (the .venv's
# Python); on these versions they run again, against the installed wheel.
read -r -a doctest_versions <<< "${FORKSAFE_DOCTEST_PYTHONS-3.14 3.15}"

find_python() {  # $1 = minor version, e.g. 3.12 -> path of an interpreter, or nothing
    local v=$1 prefix
    if command -v pyenv >/dev/null 2>&1; then
        prefix=$(pyenv versions --bare 2>/dev/null | grep -E "^${v//./\\.}(\.[0-9]+)?$" | sort -V | tail -n 1)
        if [ -n "$prefix" ] && [ -x "$(pyenv root)/versions/$prefix/bin/python" ]; then
            echo "$(pyenv root)/versions/$prefix/bin/python"
            return
        fi
    fi
    command -v "python$v" 2>/dev/null || true
}

make_venv() {  # $1 = interpreter, $2 = venv directory
    "$1" -m venv "$2" 2>/dev/null && return
    # Debian's interpreters have no bundled pip for ensurepip (Debian installs
    # it from its own package): make the venv without pip, then let pip's
    # wheel install itself into it.
    echo "$1 has no working ensurepip: pip installs itself from its wheel" >&2
    rm -rf "$2"
    "$1" -m venv --without-pip "$2" || return
    local wheels
    wheels=$(mktemp -d)
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" pip \
        && "$2/bin/python" "$(ls "$wheels"/pip-*.whl)/pip" install -q --disable-pip-version-check \
            --no-index "$(ls "$wheels"/pip-*.whl)"
    local rc=$?
    rm -rf "$wheels"
    return $rc
}

wheel=$(ls -t "$wheel_dir"/forksafe_logging-*.whl 2>/dev/null | head -n 1)
if [ -z "$wheel" ]; then
    echo "no wheel in $wheel_dir: run 'make wheel' first" >&2
    exit 2
fi

# Versions run side by side, FORKSAFE_LANES at a time (default 2): the suite
# spends part of its time waiting on the processes it starts (a version's
# run keeps one CPU 73% busy: 3.12, 230 s of CPU in 314 s), so two lanes on
# two CPUs take well under the time of one after the other. Each version writes its own log in .ci-logs/ (tail
# it to follow a run), printed whole, in version order, once it is done.
lanes=${FORKSAFE_LANES:-2}
[[ $lanes =~ ^[1-9][0-9]*$ ]] || { echo "FORKSAFE_LANES must be a positive number; got '$lanes'" >&2; exit 2; }
logs="$root/.ci-logs"
rm -rf "$logs"
mkdir -p "$logs"

# Each version's result, one line each in $logs/$v.result: "ran", "failed
# <why>" or "crashed <why>". Its output goes to $logs/$v.log.
test_version() {  # $1 = minor version, $2 = interpreter
    local v=$1 py=$2 result="$logs/$1.result" venv="$root/.venvs/py$1" ok=1 rc=0 spec
    shift 2  # the rest: pytest's arguments
    if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/pip" ]; then
        make_venv "$py" "$venv" || { echo "failed $v (venv)" >> "$result"; return; }
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"; then
        echo "failed $v (install)" >> "$result"
        return
    fi
    # e2e: the servers and pools of the end-to-end tests. Where they do not
    # install, the tests that need them skip and say why.
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheel}[test,e2e]"; then
        echo "warning: the e2e extra did not install on Python $v: its tests will skip" >&2
        if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheel}[test]"; then
            echo "failed $v (install)" >> "$result"
            return
        fi
    fi
    if [[ " ${uwsgi_versions[*]} " == *" $v "* ]] \
        && ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheel}[e2e-uwsgi]"; then
        # Its tests skip with the reason; the rest of the suite still runs.
        echo "uWSGI did not build for Python $v: its tests will be skipped" >&2
    fi
    "$venv/bin/python" -m pip uninstall -q -y structlog >/dev/null 2>&1
    echo "=== Python $v ($("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')): tests against $(basename "$wheel"), structlog not installed"
    # The pytest script, not 'python -m pytest': the latter puts the source
    # tree on sys.path, and the suite must import the installed wheel.
    # --durations: where a version's minutes go shows in the CI log.
    # --basetemp: a lane's own, so that two pytest runs at once never clean
    # up each other's temporary directories.
    local pytest=("$venv/bin/pytest" --basetemp "$logs/tmp-$v")
    (cd "$root" && FORKSAFE_TEST_WHEEL=1 "${pytest[@]}" -rs --durations=10 "$@") || rc=$?
    if [ "$rc" -gt 128 ]; then
        # The interpreter itself died (139: SIGSEGV, 134: SIGABRT): seen once,
        # on pyenv's 3.12.1, in its cycle collector during a test that ran
        # no code of ours (the library is pure Python). Run the suite once more so that one crash does not
        # hide the rest; a second crash fails, and the first is reported
        # below either way, never hidden.
        echo "crashed $v (pytest died with status $rc; see the faulthandler traceback above)" >> "$result"
        echo "=== Python $v: the interpreter crashed (status $rc); the suite runs once more"
        rc=0
        (cd "$root" && FORKSAFE_TEST_WHEEL=1 "${pytest[@]}" -rs "$@") || rc=$?
    fi
    [ "$rc" -eq 0 ] || ok=0
    for spec in "${structlogs[@]}"; do
        if [[ "$spec" == *"=="* && "$v" != "${queue[0]}" && -z "${FORKSAFE_STRUCTLOG_PINNED_ALL:-}" ]]; then
            echo "=== Python $v: $spec runs on Python ${queue[0]} only (FORKSAFE_STRUCTLOG_PINNED_ALL=1 runs it here too)"
            continue
        fi
        if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$spec"; then
            echo "failed $v ($spec: install)" >> "$result"
            ok=0
            continue
        fi
        echo "=== Python $v: structlog tests with structlog $("$venv/bin/python" -c 'import structlog; print(structlog.__version__)')"
        (cd "$root" && FORKSAFE_TEST_WHEEL=1 "${pytest[@]}" "$@" tests/test_structlog.py) || ok=0
    done
    if [[ " ${doctest_versions[*]} " == *" $v "* ]]; then
        echo "=== Python $v: the docs' doctests, against the installed wheel"
        # sphinx-build, not 'python -m sphinx', which would put the source
        # tree on sys.path.
        if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${wheel}[docs,structlog]" \
            || ! "$venv/bin/sphinx-build" -W --keep-going -q -b doctest "$root/docs" \
                "$root/docs/_build/doctest-py$v"; then
            echo "the docs' doctests failed on Python $v" >&2
            ok=0
        fi
    fi
    if [ $ok = 1 ]; then
        echo "ran" >> "$result"
    else
        echo "failed $v" >> "$result"
    fi
}

ran=() skipped=() failed=() fetched=() crashed=()
# Interpreters first, one at a time: scripts/get-python.sh keeps one APT
# state for every version it fetches.
queue=() pythons=()
for v in "${versions[@]}"; do
    py=$(find_python "$v")
    if [ -z "$py" ]; then
        # The script says on stderr what it did, or why it could not.
        if py=$(scripts/get-python.sh "$v" | tail -n 1) && [ -n "$py" ]; then
            fetched+=("$v")
        else
            skipped+=("$v (no interpreter found, and scripts/get-python.sh could not fetch one)")
            continue
        fi
    fi
    queue+=("$v")
    pythons+=("$py")
done

printed=0
print_finished() {  # each finished version's log, in version order, once
    local v
    while [ "$printed" -lt "${#queue[@]}" ]; do
        v=${queue[$printed]}
        [ -f "$logs/$v.end" ] || return 0
        cat "$logs/$v.log"
        echo "=== Python $v: done in $(( $(cat "$logs/$v.end") - $(cat "$logs/$v.start") )) s (its log: $logs/$v.log)"
        while read -r outcome why; do
            case $outcome in
                ran) ran+=("$v") ;;
                crashed) crashed+=("$why") ;;
                *) failed+=("$why") ;;
            esac
        done < "$logs/$v.result"
        printed=$((printed + 1))
    done
}

for i in "${!queue[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$lanes" ]; do
        wait -n
        print_finished
    done
    v=${queue[$i]}
    echo "=== Python $v: started ($(date -u +%H:%M:%S); lanes: $lanes)"
    date +%s > "$logs/$v.start"
    # A lane that ends without a result (an error of the shell's) still
    # leaves one; one killed outright is caught after the last wait, below.
    (
        trap '[ -s "$logs/$v.result" ] || echo "failed $v (its lane ended without a result)" >> "$logs/$v.result"
              date +%s > "$logs/$v.end"' EXIT
        test_version "$v" "${pythons[$i]}" "$@" > "$logs/$v.log" 2>&1
    ) &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do
    wait -n
    print_finished
done
wait
for v in "${queue[@]}"; do
    if [ ! -f "$logs/$v.end" ]; then
        echo "failed $v (its lane was killed)" >> "$logs/$v.result"
        date +%s > "$logs/$v.end"
    fi
done
print_finished

echo
echo "Python versions tested: ${ran[*]:-none}"
[ ${#fetched[@]} -eq 0 ] || echo "fetched by scripts/get-python.sh: ${fetched[*]}"
[ ${#skipped[@]} -eq 0 ] || printf 'skipped: %s\n' "${skipped[@]}"
[ ${#crashed[@]} -eq 0 ] || printf 'INTERPRETER CRASHED (suite run again): %s\n' "${crashed[@]}"
[ ${#failed[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failed[@]}"
[ ${#failed[@]} -eq 0 ] && [ ${#ran[@]} -gt 0 ]
