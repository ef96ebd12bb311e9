/*
 * smbring._dirent's path and lock helpers: what every CREATE, READ and WRITE asks of a name
 * or a descriptor, done without Python's per-character work.
 *
 *   split_ascii_path(name, depot) -> list | str | None
 *       vfs.api.split_path of a name made of ASCII characters only: its checked components
 *       (a list), or the kind of PathError it is ("invalid", "syntax"), the first the
 *       components meet in order, as the Python code meets them. None: the name holds
 *       another character, whose case mapping and encoded length the Python code decides
 *       (a non-ASCII character may upper-case or case-fold to an ASCII name). `depot`: the
 *       stream depot's directory name (vfs.api.STREAMS_DIR), refused in any case.
 *
 *   range_locked(fd, start, end, write) -> bool
 *       Whether another open file description holds a kernel lock over [start, end) that a
 *       read (write, `write`) lock there would conflict with: fcntl F_OFD_GETLK, as
 *       vfs.posix.PosixVFS.range_locked asked it through struct and fcntl (a third of a
 *       READ's Python work where no lock is held). Failures raise OSError with errno.
 *
 * Both are pure but for range_locked's one system call; arguments are checked and wrong ones
 * raise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>

#include "dirent.h"

/* the names DOS reserves for devices, whatever follows a dot (vfs.api.RESERVED) */
static const char *const RESERVED[] = {
    "CON", "PRN", "AUX", "NUL",
    "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
    "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
};

/* the characters no component holds (vfs.api.BAD_CHARS; '/' separates, as '\\' does) */
static int bad_char(unsigned char c)
{
    return c < 32 || strchr("\"*:<>?|", c) != NULL;
}

/* whether the part of s[0, n) before its first '.' is a reserved device name, in any case */
static int reserved(const unsigned char *s, Py_ssize_t n)
{
    const unsigned char *dot = memchr(s, '.', (size_t)n);
    Py_ssize_t stem = dot ? dot - s : n;
    if (stem < 3 || stem > 4)
        return 0;
    for (size_t i = 0; i < sizeof RESERVED / sizeof RESERVED[0]; i++) {
        const char *r = RESERVED[i];
        if ((Py_ssize_t)strlen(r) != stem)
            continue;
        Py_ssize_t j = 0;
        while (j < stem && ascii_upper(s[j]) == (unsigned char)r[j])
            j++;
        if (j == stem)
            return 1;
    }
    return 0;
}

/* whether s[0, n) is `depot` in any case (ASCII: names equal case-folded are equal in
   upper case) */
static int is_depot(const unsigned char *s, Py_ssize_t n, const unsigned char *depot, Py_ssize_t depot_n)
{
    if (n != depot_n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (ascii_upper(s[i]) != ascii_upper(depot[i]))
            return 0;
    return 1;
}

/* the check of one component s[0, n) (not empty, not "." or ".."): NULL if it may be named,
 * else the PathError kind */
static const char *component_refused(const unsigned char *s, Py_ssize_t n, const unsigned char *depot,
                                     Py_ssize_t depot_n)
{
    if (n > 255)        /* (ASCII: a character a byte in UTF-8) */
        return "invalid";
    for (Py_ssize_t i = 0; i < n; i++)
        if (bad_char(s[i]))
            return "invalid";
    if (reserved(s, n) || is_depot(s, n, depot, depot_n))
        return "invalid";
    return NULL;
}

static PyObject *split_ascii_path(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "split_ascii_path(name, depot): two str");
        return NULL;
    }
    PyObject *name = args[0], *depot = args[1];
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(name) < 0 || PyUnicode_READY(depot) < 0)
        return NULL;
#endif
    if (!PyUnicode_IS_ASCII(name))
        Py_RETURN_NONE;
    if (!PyUnicode_IS_ASCII(depot)) {
        PyErr_SetString(PyExc_ValueError, "split_ascii_path: the depot's name is ASCII");
        return NULL;
    }
    const unsigned char *s = PyUnicode_1BYTE_DATA(name);
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    const unsigned char *depot_s = PyUnicode_1BYTE_DATA(depot);
    Py_ssize_t depot_n = PyUnicode_GET_LENGTH(depot);
    if (memchr(s, '\0', (size_t)n) != NULL)
        return PyUnicode_FromString("invalid");
    PyObject *parts = PyList_New(0);
    if (parts == NULL)
        return NULL;
    Py_ssize_t at = 0;
    while (at <= n) {
        Py_ssize_t end = at;
        while (end < n && s[end] != '\\' && s[end] != '/')
            end++;
        Py_ssize_t len = end - at;
        const unsigned char *p = s + at;
        const char *refused = NULL;
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            /* names what its directory's directory is, by the name alone; never above the share */
            Py_ssize_t held = PyList_GET_SIZE(parts);
            if (held == 0)
                refused = "syntax";
            else if (PyList_SetSlice(parts, held - 1, held, NULL) < 0)
                goto fail;
        } else if (len == 1 && p[0] == '.') {
            refused = "syntax";
        } else if (len > 0) {
            refused = component_refused(p, len, depot_s, depot_n);
            if (refused == NULL) {
                PyObject *part = PyUnicode_Substring(name, at, end);
                if (part == NULL || PyList_Append(parts, part) < 0) {
                    Py_XDECREF(part);
                    goto fail;
                }
                Py_DECREF(part);
            }
        }
        if (refused != NULL) {
            Py_DECREF(parts);
            return PyUnicode_FromString(refused);
        }
        at = end + 1;
    }
    return parts;
fail:
    Py_DECREF(parts);
    return NULL;
}

#define POSIX_LOCK_LIMIT INT64_MAX      /* a POSIX lock names offsets below it */

static PyObject *range_locked(PyObject *self, PyObject *args)
{
    (void)self;
    int fd, write, r, err = 0;
    long long start, end;
    if (!PyArg_ParseTuple(args, "iLLp:range_locked", &fd, &start, &end, &write))
        return NULL;
    if (!(0 <= start && start < end && end <= POSIX_LOCK_LIMIT)) {
        PyErr_Format(PyExc_ValueError, "not a byte range a lock names: %lld-%lld", start, end);
        return NULL;
    }
    struct flock asked = {
        .l_type = write ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = end - start,
    };
    r = fcntl(fd, F_OFD_GETLK, &asked);     /* (never waits: no GIL released for it) */
    err = errno;
    if (r < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBool_FromLong(asked.l_type != F_UNLCK);
}

PyMethodDef dirent_path_methods[] = {
    {"split_ascii_path", (PyCFunction)(void (*)(void))split_ascii_path, METH_FASTCALL,
     "split_ascii_path(name, depot) -> components | PathError kind | None (not ASCII)"},
    {"range_locked", range_locked, METH_VARARGS,
     "range_locked(fd, start, end, write) -> whether another description's kernel lock is over the range"},
    {NULL, NULL, 0, NULL},
};
