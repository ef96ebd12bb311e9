/* smbring._wire: what its source files share (the module itself is made in header.c). */
#ifndef SMBRING_WIRE_H
#define SMBRING_WIRE_H

#include <Python.h>

/* echo.c: answer_echoes, and its names looked up once (0, or -1 with an exception) */
int wire_echo_init(void);
PyObject *wire_answer_echoes(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
