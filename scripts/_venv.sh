# Sourced by scripts/test and scripts/up: make sure .venv exists and holds the project as pyproject.toml says.
# Needs nothing but python3 (3.11+). Run from the repository root (both scripts cd there first).

_venv_python="${PYTHON:-python3}"
_venv_stamp=".venv/.installed"

if ! command -v "$_venv_python" >/dev/null 2>&1; then
    echo "crawljobs: $_venv_python not found; install Python 3.11 or newer (or set PYTHON)" >&2
    exit 1
fi
if ! "$_venv_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "crawljobs: needs Python 3.11 or newer, $_venv_python is $("$_venv_python" -V 2>&1)" >&2
    exit 1
fi

# A venv whose interpreter no longer runs (moved, Python upgraded) is made again.
if [ -d .venv ] && ! .venv/bin/python -c '' >/dev/null 2>&1; then
    echo "crawljobs: .venv is broken, making it again" >&2
    rm -rf .venv
fi
if [ ! -d .venv ]; then
    echo "crawljobs: creating .venv with $("$_venv_python" -V 2>&1)" >&2
    if ! "$_venv_python" -m venv .venv; then
        rm -rf .venv
        echo "crawljobs: could not create a virtualenv; on Debian or Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi
if [ ! -f "$_venv_stamp" ] || [ pyproject.toml -nt "$_venv_stamp" ]; then
    echo "crawljobs: installing the project and its dev tools into .venv" >&2
    .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]'
    touch "$_venv_stamp"
fi

# The browser engine needs a Chromium: Debian's (on PATH, as CI installs it), the one named by
# CRAWLJOBS_BROWSER_EXECUTABLE, or else Playwright's own, downloaded once here.
if [ -z "${CRAWLJOBS_BROWSER_EXECUTABLE:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1 && [ ! -f .venv/.playwright-chromium ]; then
    echo "crawljobs: no chromium on PATH; installing Playwright's Chromium into its cache" >&2
    if .venv/bin/python -m playwright install chromium; then
        touch .venv/.playwright-chromium
    else
        echo "crawljobs: could not install Playwright's Chromium; install chromium (Debian: apt-get install chromium)" >&2
    fi
fi

export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
unset _venv_python _venv_stamp
