# shellcheck shell=bash
# Shared venv bootstrap for scripts/test and scripts/demo. Source it, don't run it.
#
#   ensure_venv dev   -> .venv with `pip install -e ".[dev]"`
#   ensure_venv       -> .venv with `pip install -e .` (a dev install also satisfies this)
#
# Reinstalls only when pyproject.toml changed: the stamp file holds
# "<sha256 of pyproject.toml> <extras>" from the last successful install.

VENV_DIR=".venv"
VENV_STAMP="$VENV_DIR/.sluice-install-stamp"

# Print the first python3 >= 3.11 on PATH (the project requires 3.11+).
_find_python() {
    local candidate
    for candidate in python3.11 python3.12 python3.13 python3.14 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_venv() {
    local extras="${1:-}" python sha stamp="" spec="."

    # Check for the interpreter, not just the directory: a half-created venv must be rebuilt.
    if [[ ! -x "$VENV_DIR/bin/python" ]]; then
        if ! python="$(_find_python)"; then
            echo "error: need python3 >= 3.11 on PATH to create $VENV_DIR" >&2
            return 1
        fi
        echo "==> creating $VENV_DIR with $python"
        "$python" -m venv --clear "$VENV_DIR"
    fi

    sha="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    [[ -f "$VENV_STAMP" ]] && stamp="$(<"$VENV_STAMP")"

    # Up to date if the hash matches and, when dev is wanted, the last install included dev.
    if [[ "$stamp" == "$sha dev" || ( -z "$extras" && "$stamp" == "$sha "* ) ]]; then
        return 0
    fi

    [[ -n "$extras" ]] && spec=".[$extras]"
    echo "==> installing -e \"$spec\" (pyproject.toml changed or first run)"
    "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
    "$VENV_DIR/bin/python" -m pip install --quiet -e "$spec"
    # Written only after pip succeeded, so a failed install is retried next run.
    printf '%s %s\n' "$sha" "$extras" >"$VENV_STAMP"
}
