# Sourced by the install-*.sh scripts: fresh_venv ROOT VENV PIP-ARGS... replaces VENV with a
# new virtualenv holding the packages PIP-ARGS name.
# It is made with the same interpreter as the project's virtualenv when there is one, else
# python3.

fresh_venv() {
    local root=$1 venv=$2
    shift 2
    local python=python3
    if [[ -x $root/.venv/bin/python ]]; then
        python=$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}
