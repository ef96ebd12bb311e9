/* smbring._dirent's files: each adds its functions to the one module (dirent.c makes it). */
#ifndef SMBRING_DIRENT_H
#define SMBRING_DIRENT_H

#include <Python.h>

extern PyMethodDef dirent_path_methods[];   /* paths.c: split_ascii_path, range_locked */

#endif
