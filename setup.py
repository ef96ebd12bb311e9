"""Builds the C core. Everything else lives in pyproject.toml."""
import glob
import os

from setuptools import Extension, find_packages, setup

CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
# Only PyInit_* is exported (PyMODINIT_FUNC): calls between the engine's files then go direct,
# not through the PLT, and link-time optimisation may inline them. Every op crosses files
# (ops.c -> request.c -> queue.c), so this is worth ~10% of an op's CPU time.
FAST = ["-fvisibility=hidden", "-flto=auto"]
if os.environ.get("SMBRING_ASAN"):
    CFLAGS += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
else:
    CFLAGS += FAST

LDFLAGS = ["-fsanitize=address"] if os.environ.get("SMBRING_ASAN") else FAST + ["-O2"]


def extension(name: str, folder: str) -> Extension:
    return Extension(
        name,
        sources=sorted(glob.glob(f"src/smbring/{folder}/*.c")),
        depends=sorted(glob.glob(f"src/smbring/{folder}/*.h") + glob.glob("src/smbring/_uring/*.h")),
        include_dirs=["src/smbring/_uring"],
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
    )


# _uring is the engine; _events is the tevent-style loop that shares its ring via a capsule;
# _dirent stats and encodes directory listings in batches; _wire reads and writes SMB2 headers.
MODULES = [("smbring._uring", "_uring"), ("smbring._events", "_events"), ("smbring._dirent", "_dirent"),
           ("smbring._wire", "_wire")]
setup(
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=False,   # the C sources under _uring/ and _events/ are not package data
    package_data={"smbring.server": ["samba_parameters.txt"]},   # Samba's smb.conf parameter names
    ext_modules=[extension(n, f) for n, f in MODULES if glob.glob(f"src/smbring/{f}/*.c")],
)
