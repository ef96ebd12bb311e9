/*
 * The op methods of Ring (read, send, statx, ...); see ops.c.
 */
#ifndef SMBRING_OPS_H
#define SMBRING_OPS_H

#include "base.h"

extern PyMethodDef ring_op_methods[];

/* Adds the result types of ops (Statx) to the module. */
int ops_add_types(PyObject *module);

#endif
