/* smbring._dirent's files: each adds its functions to the one module (dirent.c makes it). */
#ifndef SMBRING_DIRENT_H
#define SMBRING_DIRENT_H

#include <Python.h>

/* an ASCII letter in upper case, any other byte as it is (8.3 names, reserved DOS names) */
static inline unsigned char ascii_upper(unsigned char c)
{
    return c >= 'a' && c <= 'z' ? (unsigned char)(c - 32) : c;
}

extern PyMethodDef dirent_path_methods[];   /* paths.c: split_ascii_path, range_locked */

#endif
