#!/usr/bin/env bash
# Prints the interpreter `make` builds .venv with (`make PYTHON=...` overrides it): the
# distribution's own /usr/bin/python3 where it is 3.11 or later and can make a venv and build
# C extensions (its venv module, ensurepip and Python.h are there), else python3 from PATH.
# Distributions (Debian, Ubuntu, Fedora) build their Python with profile-guided optimisation
# and link-time optimisation; a plain source build (pyenv's default, --enable-shared without
# --enable-optimizations) runs the server's per-request Python code 5-15% slower
# (docs/BENCHMARKS.md, "Which Python runs the server").
system=/usr/bin/python3
if [ -x "$system" ] && "$system" - >/dev/null 2>&1 <<'PY'
import os, sys, sysconfig
import ensurepip, venv  # noqa: F401  (python3-venv on Debian)
sys.exit(0 if sys.version_info >= (3, 11) and
         os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
then
    echo "$system"
else
    echo python3
fi
