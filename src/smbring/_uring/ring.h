/*
 * Internal declarations shared by the engine's C files.
 *
 * The engine is one ring per Ring object, driven with raw syscalls from the kernel's uapi
 * header (no liburing). Every submitted request is a Python object (Request, or Batch for the
 * batched hot path) that the ring keeps a strong reference to until its last completion, so
 * the buffers it pinned stay alive and resize-locked for exactly as long as the kernel may
 * touch them.
 */
#ifndef SMBRING_RING_H
#define SMBRING_RING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <linux/io_uring.h>

#include "uring_api.h"

/* Flags and opcodes newer than the 6.1 headers this is built against; the probe decides. */
#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif
#ifndef IORING_CQE_F_NOTIF
#define IORING_CQE_F_NOTIF (1U << 3)
#endif
#ifndef IORING_ASYNC_CANCEL_ALL
#define IORING_ASYNC_CANCEL_ALL (1U << 0)
#define IORING_ASYNC_CANCEL_FD (1U << 1)
#define IORING_ASYNC_CANCEL_ANY (1U << 2)
#endif
#ifndef IORING_RECV_MULTISHOT
#define IORING_RECV_MULTISHOT (1U << 1)
#endif
#ifndef IORING_ACCEPT_MULTISHOT
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#endif
#ifndef IORING_FEAT_EXT_ARG
#define IORING_FEAT_EXT_ARG (1U << 8)
#endif
#ifndef IORING_ENTER_EXT_ARG
#define IORING_ENTER_EXT_ARG (1U << 3)
#endif
#define SR_REGISTER_PBUF_RING 22
#define SR_UNREGISTER_PBUF_RING 23
#define SR_OP_COUNT 64
#define SR_USER_SQE_FLAGS (IOSQE_FIXED_FILE | IOSQE_IO_DRAIN | IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_ASYNC)

/* Tags in the low bits of user_data say what it points to (all targets are 8-aligned). */
#define SR_TAG_REQUEST 0u
#define SR_TAG_CAPI 1u
#define SR_TAG_BATCH_ITEM 2u
#define SR_TAG_MASK 7u

typedef struct RingObject RingObject;
typedef struct RequestObject RequestObject;

/* What an op does at its last completion, before the request releases its buffers: build
 * the result value (statx, epoll_wait, recvmsg) or give a forwarded buffer back to its ring.
 * Set by the op that needs it; -1 with an exception leaves value None. */
typedef int (*request_finish_fn)(RequestObject *req);

enum { REQ_NEW = 0, REQ_INFLIGHT = 1, REQ_DONE = 2 };

/* A submitted operation; see request.c. */
struct RequestObject {
    PyObject_HEAD
    struct RequestObject *prev, *next;  /* ring's in-flight list */
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

typedef struct PendingSQE {
    struct PendingSQE *next;
    struct io_uring_sqe sqe;
} PendingSQE;

struct RingObject {
    PyObject_HEAD
    int fd;
    int enter_fd;                /* the fd, or its index once registered (IORING_REGISTER_RING_FDS) */
    unsigned enter_flags;        /* IORING_ENTER_REGISTERED_RING when enter_fd is an index */
    int closed;
    unsigned setup_flags;
    unsigned features;
    unsigned long fork_generation;
    pthread_t owner;

    /* submission queue */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_entries, *sq_flags;
    struct io_uring_sqe *sqes;
    unsigned sq_local_tail;      /* SQEs written but not yet handed to the kernel end here */
    PendingSQE *pending_head, *pending_tail;  /* queued in user space while the SQ is full */
    Py_ssize_t npending;

    /* completion queue */
    unsigned *cq_head, *cq_tail, *cq_mask, *cq_entries, *cq_overflow, *cq_flags;
    struct io_uring_cqe *cqes;

    void *sq_map, *cq_map, *sqe_map;
    size_t sq_map_size, cq_map_size, sqe_map_size;

    RequestObject inflight;      /* sentinel of the in-flight list */
    Py_ssize_t ninflight;
    Py_ssize_t fixed_inflight;   /* requests using registered buffers */

    uint8_t probe[SR_OP_COUNT];  /* IO_URING_OP_SUPPORTED per opcode */
    int have_probe;

    Py_buffer *registered;       /* registered buffers, pinned while registered */
    int nregistered;
    int nfiles;                  /* registered file table size */
    PyObject *buf_rings;         /* dict bgid -> BufRing, kept alive while registered */
    int silent;                  /* dealloc: reap without calling back into Python */
    int closing;                 /* close() is reaping: no new submissions */
    int eventfd;
};

extern PyTypeObject RingType, RequestType, BatchType, BufRingType;
extern PyObject *UringUnavailable, *UnsupportedOp;
extern unsigned long sr_fork_generation;
extern const char *const sr_op_names[SR_OP_COUNT];

/* ring.c */
int ring_refuse(RingObject *r);

/* Open, not closing, not inherited across fork(), and used by the thread that made it. */
static inline int ring_check_usable(RingObject *r)
{
    if (r->fd < 0 || r->closing || r->fork_generation != sr_fork_generation ||
        !pthread_equal(r->owner, pthread_self()))
        return ring_refuse(r);
    return 0;
}
struct io_uring_sqe *ring_queue_sqe(RingObject *r);

/* Free slots in the kernel's submission ring. */
static inline unsigned sq_space(RingObject *r)
{
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    return *r->sq_entries - (r->sq_local_tail - head);
}

/* The next SQE to fill, zeroed: a slot in the kernel ring, or, while the ring is full (or
 * earlier submissions are still queued, to keep order), one in the user-space queue. */
static inline struct io_uring_sqe *ring_next_sqe(RingObject *r)
{
    if (r->pending_head || sq_space(r) == 0)
        return ring_queue_sqe(r);
    struct io_uring_sqe *sqe = &r->sqes[r->sq_local_tail & *r->sq_mask];
    r->sq_local_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

int ring_submit(RingObject *r);
int ring_wait_and_dispatch(RingObject *r, unsigned min_complete, int64_t timeout_ns,
                           int max_callbacks);
int ring_op_supported(RingObject *r, int opcode);
int ring_register(RingObject *r, unsigned opcode, void *arg, unsigned nr);

/* req joins the ring's in-flight list (the ring's reference is taken by the caller). */
static inline void ring_link_inflight(RingObject *r, RequestObject *req)
{
    req->prev = r->inflight.prev;
    req->next = &r->inflight;
    r->inflight.prev->next = req;
    r->inflight.prev = req;
    r->ninflight++;
}

/* request.c */
RequestObject *request_new(RingObject *r, uint8_t opcode, PyObject *callback);
int request_pin(RequestObject *req, PyObject *obj, int writable, Py_buffer **out);
int request_reserve_views(RequestObject *req, int n);
void *request_alloc(RequestObject *req, size_t size);
void request_release(RequestObject *req);
int request_complete(RequestObject *req, int32_t res, uint32_t flags, int silent);
struct io_uring_sqe *request_queue(RequestObject *req, RingObject *r, int fd, int sqe_flags);
void request_start(RequestObject *req, RingObject *r, int fd, int sqe_flags);
BatchObject *batch_new(RingObject *r, uint8_t opcode, PyObject *callback, Py_ssize_t count);

/* ops.c, register.c */
extern PyMethodDef ring_op_methods[];
extern PyMethodDef ring_register_methods[];
void bufrings_detach(RingObject *r);
PyObject *bufring_lookup(RingObject *r, unsigned group);
int bufring_forward(RingObject *r, RequestObject *src, PyObject **ring_buffers, char **addr,
                    Py_ssize_t *len, uint16_t *bid);
void bufring_give_back(PyObject *ring_buffers, uint16_t bid);


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
int ring_type_ready(void);

/* openat2 rejects a mode unless the file may be created (O_CREAT or O_TMPFILE, which
 * includes O_DIRECTORY's bit: test the whole of it). */
static inline int sr_open_takes_mode(int flags)
{
    return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE;
}
extern const sr_ring_api sr_capi;

/* errors */
PyObject *sr_oserror(int err, const char *what);

#endif
