/*
 * The queues: SQE slots, with a user-space queue behind the kernel's while it is full,
 * submission, and waiting for completions that never exceeds its timeout. What the
 * completions mean is dispatch.c's business; this file only moves SQEs and counts CQEs.
 */
#include "ring.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* Enters through the registered ring index when there is one: the kernel then skips the
 * fdget/fdput of the ring's own fd on every call. Only the owner thread enters (ring_check). */
static int sys_enter(RingObject *r, unsigned to_submit, unsigned min_complete, unsigned flags,
                     void *arg, size_t argsz)
{
    return sys_io_uring_enter(r->enter_fd, to_submit, min_complete, flags | r->enter_flags, arg,
                              argsz);
}

int64_t sr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- submission ----------------------------------------------------------------------- */

/* ring_next_sqe's slow path: a slot in the user-space queue while the kernel ring is full
 * (or earlier submissions are still queued there, to keep order). */
struct io_uring_sqe *ring_queue_sqe(RingObject *r)
{
    PendingSQE *p = PyMem_Malloc(sizeof(*p));
    if (!p) {
        PyErr_NoMemory();
        return NULL;
    }
    p->next = NULL;
    if (r->pending_tail)
        r->pending_tail->next = p;
    else
        r->pending_head = p;
    r->pending_tail = p;
    r->npending++;
    memset(&p->sqe, 0, sizeof(p->sqe));
    return &p->sqe;
}

static void move_pending(RingObject *r)
{
    while (r->pending_head && sq_space(r) > 0) {
        PendingSQE *p = r->pending_head;
        r->sqes[r->sq_local_tail & *r->sq_mask] = p->sqe;
        r->sq_local_tail++;
        r->pending_head = p->next;
        if (!r->pending_head)
            r->pending_tail = NULL;
        r->npending--;
        PyMem_Free(p);
    }
}

/* Hands the kernel everything prepared, queue included. Returns the count, or -1 with OSError. */
int ring_submit(RingObject *r)
{
    int total = 0;
    for (;;) {
        move_pending(r);
        unsigned n = r->sq_local_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
        __atomic_store_n(r->sq_tail, r->sq_local_tail, __ATOMIC_RELEASE);
        if (n == 0)
            return total;
        int ret = sys_enter(r, n, 0, 0, NULL, 0);
        if (ret < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EBUSY) {
                /* completions must be reaped first; the caller's next wait does that */
                return total;
            }
            sr_oserror(errno, "io_uring_enter");
            return -1;
        }
        total += ret;
        if (!r->pending_head)
            return total;
    }
}

/* At teardown: SQEs still queued in user space are dropped. */
void ring_free_queued(RingObject *r)
{
    while (r->pending_head) {
        PendingSQE *p = r->pending_head;
        r->pending_head = p->next;
        PyMem_Free(p);
    }
    r->pending_tail = NULL;
    r->npending = 0;
}

/* ---- completion ------------------------------------------------------------------------ */

/* Submits n SQEs and runs deferred task work, without blocking. */
static int enter_nowait(RingObject *r, unsigned n)
{
    if (sys_enter(r, n, 0, IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR &&
        errno != EAGAIN && errno != EBUSY) {
        sr_oserror(errno, "io_uring_enter");
        return -1;
    }
    return 0;
}

/* The kernel says it holds nothing for us: no deferred task work that would post CQEs
 * (IORING_SQ_TASKRUN, which it only reports with TASKRUN_FLAG) and no CQEs that overflowed
 * the ring. Then an enter that neither submits nor blocks would do nothing. */
static int kernel_idle(RingObject *r)
{
    return (r->setup_flags & IORING_SETUP_TASKRUN_FLAG) &&
           !(__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW));
}

/* Nothing is ready and nothing is on its way: a wait now would block. */
static int would_block(RingObject *r, unsigned min_complete, int64_t timeout_ns)
{
    return min_complete > 0 && timeout_ns != 0 && cq_ready(r) < min_complete && kernel_idle(r);
}

/* Waits for CQEs without ever exceeding timeout_ns (a problem Samba's developers met with liburing). The first enter
 * submits and runs deferred task work without blocking, holding the GIL: most completions
 * are ready by then and this costs one syscall. Only if that is not enough does it block,
 * with the GIL released, for at most the remaining time. When the kernel says beforehand that
 * nothing is ready (IORING_SQ_TASKRUN clear, no CQE), the blocking enter submits too: one
 * system call per wait instead of two, what an event loop waiting in the ring makes most;
 * and a poll with nothing to submit and nothing pending in the kernel makes none. */
int ring_wait_cqes(RingObject *r, unsigned min_complete, int64_t timeout_ns)
{
    int64_t deadline = timeout_ns >= 0 ? sr_now_ns() + timeout_ns : 0;
    if (r->pending_head && ring_submit(r) < 0)
        return -1;
    unsigned n = r->sq_local_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    __atomic_store_n(r->sq_tail, r->sq_local_tail, __ATOMIC_RELEASE);
    if (would_block(r, min_complete, timeout_ns)) {
        /* submitted by the first enter of the loop below */
    } else {
        if ((n > 0 || min_complete == 0 || cq_ready(r) < min_complete) &&
            (n > 0 || !kernel_idle(r)) && enter_nowait(r, n) < 0)
            return -1;
        n = 0;
    }
    while (cq_ready(r) < min_complete && timeout_ns != 0) {
        struct __kernel_timespec ts;
        struct io_uring_getevents_arg arg;
        memset(&arg, 0, sizeof(arg));
        if (timeout_ns > 0) {
            int64_t left = deadline - sr_now_ns();
            if (left <= 0)
                return n > 0 ? enter_nowait(r, n) : 0;
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
        unsigned want = min_complete - cq_ready(r);
        int ret, err;
        Py_BEGIN_ALLOW_THREADS
        ret = sys_enter(r, n, want, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                        sizeof(arg));
        err = errno;
        Py_END_ALLOW_THREADS
        /* whatever the kernel did not take is submitted by the next call (as ring_submit
         * leaves it after EAGAIN/EBUSY: completions must be reaped first) */
        n = 0;
        if (ret < 0) {
            if (err == ETIME)
                return 0;
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            if (err != EAGAIN && err != EBUSY) {
                sr_oserror(err, "io_uring_enter");
                return -1;
            }
        } else if (PyErr_CheckSignals() < 0) {
            /* a signal that came while the kernel took submissions ends that enter with
             * their count, not EINTR: its handler runs here, before the next wait */
            return -1;
        }
    }
    return 0;
}
