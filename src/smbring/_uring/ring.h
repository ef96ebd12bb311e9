/*
 * The ring: one io_uring instance per Python Ring object, driven with raw system calls.
 *
 * RingObject holds the state of every layer of the engine (one Python object, one struct);
 * this header declares the lowest layer, the kernel ring itself: setup.c (set up, tear
 * down) and queue.c (submit, wait). docs/ENGINE.md ("Source layout") draws the layers.
 */
#ifndef SMBRING_RING_H
#define SMBRING_RING_H

#include "base.h"
#include "kernel.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* The user_data of every SQE points at what its completion goes to; tags in the low bits
 * say what that is (all targets are 8-aligned). 0 means no target: nothing to dispatch. */
#define SR_TAG_REQUEST 0u
#define SR_TAG_CAPI 1u         /* an sr_completion of another extension (uring_api.h) */
#define SR_TAG_BATCH_ITEM 2u
#define SR_TAG_MASK 7u

/* A place in the ring's list of requests in flight: the head lives in the ring, the links
 * in the requests (request.h), so the ring needs no request type to hold the list. */
typedef struct InflightLink {
    struct InflightLink *prev, *next;
} InflightLink;

typedef struct PendingSQE {
    struct PendingSQE *next;
    struct io_uring_sqe sqe;
} PendingSQE;

typedef struct RingObject {
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
    uint16_t personality;        /* stamped on every op's SQE: a registered personality, 0 none */

    /* completion queue */
    unsigned *cq_head, *cq_tail, *cq_mask, *cq_entries, *cq_overflow, *cq_flags;
    struct io_uring_cqe *cqes;

    void *sq_map, *cq_map, *sqe_map;
    size_t sq_map_size, cq_map_size, sqe_map_size;

    uint8_t probe[SR_OP_COUNT];  /* IO_URING_OP_SUPPORTED per opcode */
    int have_probe;

    /* requests (request.c, dispatch.c) */
    InflightLink inflight;       /* head of the in-flight list */
    Py_ssize_t ninflight;
    Py_ssize_t fixed_inflight;   /* requests using registered buffers */
    int silent;                  /* dealloc: reap without calling back into Python */
    int closing;                 /* close() is reaping: no new submissions */

    /* registered resources (register.c) */
    Py_buffer *registered;       /* registered buffers, pinned while registered */
    int nregistered;
    int nfiles;                  /* registered file table size */
    PyObject *buf_rings;         /* dict bgid -> BufRing, kept alive while registered */

    int eventfd;                 /* for an outside event loop (ring_object.c); -1 until asked */
} RingObject;

/* ---- setup.c ------------------------------------------------------------------------------ */

/* Counts fork()s in this process: a ring made before one is refused in the child. */
extern unsigned long sr_fork_generation;
void ring_watch_forks(void);

/* Sets the ring up: with flags NULL, the wanted flags less those the kernel refuses. 0, or -1
 * with ValueError (bad flags) or UringUnavailable. */
int ring_setup(RingObject *r, unsigned entries, unsigned cq_entries, const unsigned *flags,
               int sqpoll);
/* Releases the kernel side: ring fd registration, queued SQEs, mappings, eventfd, fd. */
void ring_destroy(RingObject *r);
int ring_register(RingObject *r, unsigned opcode, void *arg, unsigned nr);
int ring_op_supported(RingObject *r, int opcode);
int ring_refuse(RingObject *r);

/* The thread that made the ring, in the process that made it. */
static inline int ring_owned_here(RingObject *r)
{
    return r->fork_generation == sr_fork_generation && pthread_equal(r->owner, pthread_self());
}

/* Open, not closing, not inherited across fork(), and used by the thread that made it. */
static inline int ring_check_usable(RingObject *r)
{
    if (r->fd < 0 || r->closing || !ring_owned_here(r))
        return ring_refuse(r);
    return 0;
}

/* ---- queue.c ------------------------------------------------------------------------------ */

struct io_uring_sqe *ring_queue_sqe(RingObject *r);
void ring_free_queued(RingObject *r);
int ring_submit(RingObject *r);
int ring_wait_cqes(RingObject *r, unsigned min_complete, int64_t timeout_ns);
int64_t sr_now_ns(void);

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

/* Completions the kernel has posted and nobody has consumed yet. */
static inline unsigned cq_ready(RingObject *r)
{
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

#endif
