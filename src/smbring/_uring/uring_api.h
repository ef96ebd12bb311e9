/*
 * The C interface other extension modules (smbring._events) use to share one ring with the
 * engine. Obtained at run time with
 *
 *     const sr_ring_api *api = PyCapsule_Import("smbring._uring._C_API", 0);
 *
 * so the modules link independently. Everything here must be called with the GIL held, from the
 * thread that created the ring.
 */
#ifndef SMBRING_URING_API_H
#define SMBRING_URING_API_H

#include <Python.h>
#include <stdint.h>
#include <linux/io_uring.h>

#define SR_RING_API_VERSION 1

struct sr_ring;  /* opaque: the C side of a smbring.uring.Ring */

/*
 * A completion consumed in C instead of by a Python callback. Embed it in your own structure,
 * keep that memory alive until the completion that ends the request arrives (the last CQE of a
 * multishot request, i.e. one without IORING_CQE_F_MORE), and pass it to get_sqe. The handler
 * runs inside the ring's dispatch loop; it must not raise (return -1 with an exception set only
 * to abort the dispatch, which then propagates).
 */
typedef struct sr_completion sr_completion;
typedef int (*sr_cqe_handler)(sr_completion *self, int32_t res, uint32_t cqe_flags);
struct sr_completion {
    sr_cqe_handler handler;
};

/* The user_data the engine gives a C completion's SQE: what ASYNC_CANCEL's addr needs. */
#define SR_CAPI_USER_DATA(c) ((uint64_t)(uintptr_t)(c) | 1u)

typedef struct sr_ring_api {
    int version;                               /* SR_RING_API_VERSION */
    /* The ring behind a smbring.uring.Ring (or a subclass); NULL with TypeError otherwise.
       The pointer is valid as long as the Python object lives (hold a reference). */
    struct sr_ring *(*from_object)(PyObject *ring);
    /* A zeroed SQE whose completion goes to `c`; user_data is set for you (do not change it).
       Queued in user space if the SQ is full. NULL with an exception set on error (closed ring,
       forked child, wrong thread). */
    struct io_uring_sqe *(*get_sqe)(struct sr_ring *ring, sr_completion *c);
    /* Submits everything prepared so far. Returns the number submitted, or -1 with OSError set. */
    int (*submit)(struct sr_ring *ring);
    /* Submits, then waits until at least `min_complete` CQEs are ready or `timeout_ns` has passed
       (-1: no limit; 0: do not wait), then dispatches ready CQEs: C completions always, Python
       callbacks at most `max_callbacks` (-1: no limit; the rest stay queued for the next call).
       Returns the number of Python callbacks run, or -1 with an exception set (a callback raised,
       or a handler failed; undispatched CQEs stay queued). A timeout is not an error. */
    int (*wait_and_dispatch)(struct sr_ring *ring, unsigned min_complete, int64_t timeout_ns,
                             int max_callbacks);
    /* True when the probe says the kernel supports `opcode`. */
    int (*op_supported)(struct sr_ring *ring, int opcode);
    /* CQEs ready for dispatch right now (C and Python), without entering the kernel. */
    unsigned (*cq_ready)(struct sr_ring *ring);
    /* Requests submitted from Python (they have callbacks or results) not yet complete. */
    Py_ssize_t (*inflight)(struct sr_ring *ring);
} sr_ring_api;

/* Newer opcodes than the build machine's headers may know; the probe says what really works. */
#define SR_OP_READ_MULTISHOT 49
/* IORING_SETUP_NO_SQARRAY (6.6): the SQ has no index array, SQE i is slot i */
#define SR_SETUP_NO_SQARRAY (1U << 16)
#define SR_OP_EPOLL_WAIT 59

#endif
