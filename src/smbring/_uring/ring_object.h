/*
 * The Python type Ring: set-up arguments, submit/wait/process, close and close_fd, and the
 * method table that gathers the op (ops.c) and registration (register.c) methods.
 */
#ifndef SMBRING_RING_OBJECT_H
#define SMBRING_RING_OBJECT_H

#include "ring.h"

extern PyTypeObject RingType;
int ring_type_ready(void);

#endif
