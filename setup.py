"""Builds the C core. Everything else lives in pyproject.toml."""
import glob
import os

from setuptools import Extension, setup

CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers"]
if os.environ.get("SMBRING_ASAN"):
    CFLAGS += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]

setup(
    ext_modules=[
        Extension(
            "smbring._uring",
            sources=sorted(glob.glob("src/smbring/_uring/*.c")),
            depends=sorted(glob.glob("src/smbring/_uring/*.h")),
            extra_compile_args=CFLAGS,
            extra_link_args=["-fsanitize=address"] if os.environ.get("SMBRING_ASAN") else [],
        ),
    ],
)
