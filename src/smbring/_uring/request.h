/*
 * Requests: every submitted operation is a Python object (Request, or Batch for the batched
 * hot path) that the ring keeps a strong reference to until its last completion, so the
 * buffers it pinned stay alive and resize-locked for exactly as long as the kernel may touch
 * them. request.c makes, queues and completes them; it knows nothing of particular ops.
 */
#ifndef SMBRING_REQUEST_H
#define SMBRING_REQUEST_H

#include "ring.h"

#include <stddef.h>

/* The sqe_flags a caller may give an op. */
#define SR_USER_SQE_FLAGS (IOSQE_FIXED_FILE | IOSQE_IO_DRAIN | IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_ASYNC)

typedef struct RequestObject RequestObject;

/* What an op does at its last completion, before the request releases its buffers: build
 * the result value (statx, epoll_wait, recvmsg) or give a forwarded buffer back to its ring.
 * Set by the op that needs it; -1 with an exception leaves value None. */
typedef int (*request_finish_fn)(RequestObject *req);

enum { REQ_NEW = 0, REQ_INFLIGHT = 1, REQ_DONE = 2 };

struct RequestObject {
    PyObject_HEAD
    InflightLink link;                  /* in the ring's in-flight list */
    RingObject *ring;                   /* strong while in flight */
    PyObject *callback;
    PyObject *keep;                     /* objects the kernel reads (paths, names): kept alive */
    PyObject *value;                    /* op-specific result built at completion (statx, epoll) */
    Py_buffer *views;                   /* pinned buffers, released at the last completion */
    int nviews;
    Py_buffer one_view;                 /* views points here for the usual single buffer */
    void *mem;                          /* scratch the kernel reads or writes (iovecs, msghdr, ...) */
    int32_t res;
    uint32_t flags;
    int fd;                             /* the descriptor the op works on, for close_fd; -1 none */
    uint8_t opcode;
    uint8_t state;
    uint8_t notif_pending;              /* SEND_ZC: the buffer-released notification is due */
    uint8_t zc_copied;
    uint8_t uses_fixed_buffer;
    uint8_t is_batch;
    uint8_t selects_buffer;             /* the kernel picks a buffer of group buf_group */
    uint16_t buf_group;
    uint16_t give_back_bid;             /* a forwarded provided buffer (its ring in keep) */
    request_finish_fn finish;           /* NULL: nothing op-specific at the last completion */
};

/* A batch: many SQEs of one kind, one Python object, one callback when all are done. */
typedef struct BatchItem {
    struct BatchObject *batch;
    int32_t res;
} __attribute__((aligned(8))) BatchItem;

typedef struct BatchObject {
    RequestObject base;
    Py_ssize_t count, remaining;
    BatchItem *items;
} BatchObject;

extern PyTypeObject RequestType, BatchType;
int request_types_ready(void);

/* Making a request: checks the ring and the op, then pin and allocate what the kernel will
 * touch, then queue (which takes the SQE) or, for a batch, start and fill SQEs directly. */
RequestObject *request_new(RingObject *r, uint8_t opcode, PyObject *callback);
BatchObject *batch_new(RingObject *r, uint8_t opcode, PyObject *callback, Py_ssize_t count);
int request_pin(RequestObject *req, PyObject *obj, int writable, Py_buffer **out);
int request_reserve_views(RequestObject *req, int n);
void *request_alloc(RequestObject *req, size_t size);
struct io_uring_sqe *request_queue(RequestObject *req, RingObject *r, int fd, int sqe_flags);
void request_start(RequestObject *req, RingObject *r, int fd, int sqe_flags);

/* One CQE for req (its callback runs unless silent). 0, or -1 if the callback raised. */
int request_complete(RequestObject *req, int32_t res, uint32_t flags, int silent);

/* The ring's requests in flight: how many work on fd, and forgetting them all (close). */
Py_ssize_t requests_on_fd(RingObject *r, int fd);
Py_ssize_t requests_abandon(RingObject *r);

#endif
