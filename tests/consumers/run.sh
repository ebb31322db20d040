#!/usr/bin/env bash
# run.sh BUILD_DIR [install|subproject]...: builds tests/consumers/app.cpp the two ways a user
# of tether would, and runs it (both ways when none is named).
#
#   install      `meson install` BUILD_DIR into BUILD_DIR/consumers/destdir, then
#                c++ -std=c++20 app.cpp $(pkg-config --cflags --libs tether)
#   subproject   a Meson project in BUILD_DIR/consumers/subproject whose subprojects/tether
#                links to this repository, using dependency('tether')
#
# Everything it makes stays under BUILD_DIR/consumers, reused by the next run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
(($# >= 1)) || {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
build=$(cd "$root/$1" 2>/dev/null && pwd) || build=$(cd "$1" && pwd)
shift
work=$build/consumers
modes=("$@")
((${#modes[@]})) || modes=(install subproject)

step() { printf -- '-- %s\n' "$*"; }

consume_installed() {
    local destdir=$work/destdir
    rm -rf "$destdir"
    step "meson install -C $build --destdir $destdir"
    meson install -C "$build" --no-rebuild --quiet --destdir "$destdir"

    local pc
    pc=$(find "$destdir" -name tether.pc -print -quit)
    if [[ -z $pc ]]; then
        echo "tether.pc was not installed" >&2
        return 1
    fi
    # Move the install to where it sits, as a relocated install would be: the .pc names the
    # configured prefix, and its other paths derive from it.
    local prefix
    prefix=$(sed -n 's/^prefix=//p' "$pc")
    sed -i "s|^prefix=.*|prefix=$destdir$prefix|" "$pc"
    PKG_CONFIG_PATH=$(dirname "$pc")
    export PKG_CONFIG_PATH

    local flags app=$work/installed-app
    flags=$(pkg-config --cflags --libs tether)
    # Skip the compile (seconds, most of it fmt) when nothing it reads has changed: the flags,
    # app.cpp and the headers (meson install keeps their times; it rewrites the library's).
    if [[ ! -x $app || $flags != "$(cat "$app.flags" 2>/dev/null)" ]] ||
        [[ -n $(find "$here/app.cpp" "$destdir" -type f \( -name '*.cpp' -o -name '*.hpp' \) \
            -newer "$app" -print -quit) ]]; then
        step "c++ -std=c++20 app.cpp $flags"
        # shellcheck disable=SC2086 # the flags are words
        c++ -std=c++20 "$here/app.cpp" -o "$app" $flags
        printf '%s' "$flags" >"$app.flags"
    else
        step "c++ -std=c++20 app.cpp $flags (up to date)"
    fi
    step "installed-app"
    LD_LIBRARY_PATH=$(pkg-config --variable=libdir tether)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        "$app"
}

consume_subproject() {
    local src=$work/subproject bld=$work/subproject/build
    mkdir -p "$src/subprojects"
    local f
    for f in meson.build app.cpp; do
        # Copy only what changed, so that an unchanged app isn't rebuilt.
        cmp -s "$here/$f" "$src/$f" || cp "$here/$f" "$src/$f"
    done
    ln -sfn "$root" "$src/subprojects/tether"
    if [[ -f $bld/meson-private/coredata.dat ]]; then
        step "meson setup --reconfigure $bld"
        meson setup --reconfigure "$bld" "$src" --force-fallback-for=tether >/dev/null
    else
        step "meson setup $bld"
        meson setup "$bld" "$src" --force-fallback-for=tether >/dev/null
    fi
    step "meson compile"
    meson compile -C "$bld" >/dev/null
    step "app"
    "$bld/app"
}

mkdir -p "$work"
for mode in "${modes[@]}"; do
    case $mode in
    install) consume_installed ;;
    subproject) consume_subproject ;;
    *)
        echo "run.sh: unknown consumer '$mode'" >&2
        exit 2
        ;;
    esac
done
