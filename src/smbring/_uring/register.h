/*
 * Registered resources: fixed buffers, the fixed file table, and provided buffer rings
 * (BufRing), which multishot receives fill and write(fd, req)/send(fd, req) forward from.
 */
#ifndef SMBRING_REGISTER_H
#define SMBRING_REGISTER_H

#include "request.h"

extern PyTypeObject BufRingType;
extern PyMethodDef ring_register_methods[];

/* The ring's buffer ring for group (borrowed), or NULL. */
PyObject *bufring_lookup(RingObject *r, unsigned group);
/* For write(fd, req) and send(fd, req): where the data of the completion src lies. */
int bufring_forward(RingObject *r, RequestObject *src, PyObject **ring_buffers, char **addr,
                    Py_ssize_t *len, uint16_t *bid);
/* The kernel is done with a forwarded buffer: back into the ring it came from. */
void bufring_give_back(PyObject *ring_buffers, uint16_t bid);

/* At ring teardown: registered buffers are released, buffer rings forget the ring; both
 * are kept alive instead where requests were `abandoned` (see register.c). */
void register_release_all(RingObject *r, int abandoned);

#endif
