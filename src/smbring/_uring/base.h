/*
 * What every file of the engine uses and that uses none of them: the module's exceptions,
 * OSError from an errno, the op names, and reading small ints from Python objects.
 */
#ifndef SMBRING_BASE_H
#define SMBRING_BASE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <limits.h>

extern PyObject *UringUnavailable, *UnsupportedOp;
/* Creates both exceptions and adds them to the module. */
int base_add_exceptions(PyObject *module);

/* Sets OSError(err, strerror(err)) with `what` (the failed call) as its filename; NULL. */
PyObject *sr_oserror(int err, const char *what);

/* IORING_OP_* names by opcode ("read", "send_zc"); NULL past the last op this engine knows. */
#define SR_OP_COUNT 64
extern const char *const sr_op_names[SR_OP_COUNT];

static inline const char *sr_op_name(int opcode)
{
    return opcode >= 0 && opcode < SR_OP_COUNT && sr_op_names[opcode] ? sr_op_names[opcode] : "?";
}

/* An exact int of magnitude below 2**30 (descriptors, flags, small offsets) read without a
 * call: 1 with *out set, 0 for anything else (the caller then takes the general path). */
static inline int sr_small_int(PyObject *o, long *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)o))
        return 0;
    *out = (long)PyUnstable_Long_CompactValue((PyLongObject *)o);
    return 1;
#else
    Py_ssize_t size = Py_SIZE(o);
    if (size < -1 || size > 1)
        return 0;
    *out = size * (long)((PyLongObject *)o)->ob_digit[0];
    return 1;
#endif
}

static inline int sr_as_int(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in a C int");
        return -1;
    }
    return (int)v;
}

/* openat2 rejects a mode unless the file may be created (O_CREAT or O_TMPFILE, which
 * includes O_DIRECTORY's bit: test the whole of it). */
static inline int sr_open_takes_mode(int flags)
{
    return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE;
}

#endif
