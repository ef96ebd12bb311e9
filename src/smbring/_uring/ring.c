/*
 * The Ring: setup with graceful flag fallback, submission with a user-space overflow queue,
 * waiting that never exceeds its timeout, and batched completion dispatch.
 */
#include "ring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

unsigned long sr_fork_generation = 0;

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

/* Enters through the registered ring index when there is one: the kernel then skips the
 * fdget/fdput of the ring's own fd on every call. Only the owner thread enters (ring_check). */
static int sys_enter(RingObject *r, unsigned to_submit, unsigned min_complete, unsigned flags,
                     void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, r->enter_fd, to_submit, min_complete,
                        flags | r->enter_flags, arg, argsz);
}

static void register_ring_fd(RingObject *r)
{
    struct io_uring_rsrc_update upd;
    memset(&upd, 0, sizeof(upd));
    upd.offset = -1U;           /* any free slot */
    upd.data = (uint64_t)r->fd;
    r->enter_fd = r->fd;
    r->enter_flags = 0;
    if (ring_register(r, IORING_REGISTER_RING_FDS, &upd, 1) == 1) {
        r->enter_fd = (int)upd.offset;
        r->enter_flags = IORING_ENTER_REGISTERED_RING;
    }
}

int ring_register(RingObject *r, unsigned opcode, void *arg, unsigned nr)
{
    return (int)syscall(__NR_io_uring_register, r->fd, opcode, arg, nr);
}

PyObject *sr_oserror(int err, const char *what)
{
    PyObject *args = Py_BuildValue("(is)", err, strerror(err));
    if (args) {
        PyObject *exc = PyObject_Call(PyExc_OSError, args, NULL);
        Py_DECREF(args);
        if (exc) {
            if (what) {
                PyObject *note = PyUnicode_FromString(what);
                if (note) {
                    PyObject_SetAttrString(exc, "filename", note);
                    Py_DECREF(note);
                }
            }
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    return NULL;
}

/* ---- setup ---------------------------------------------------------------------------- */

/* Setup flags we ask for, dropped newest-first when the kernel refuses them. Never SQPOLL by
 * default: its polling thread fights the application for the CPU on small machines. */
static const unsigned wanted_flags[] = {
    SR_SETUP_NO_SQARRAY, IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER, IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_COOP_TASKRUN, IORING_SETUP_SUBMIT_ALL, IORING_SETUP_CQSIZE,
};

static void unavailable(int err)
{
    const char *why;
    switch (err) {
    case ENOSYS: why = "io_uring is not supported by this kernel (ENOSYS)"; break;
    case EPERM: why = "io_uring is disabled for this process (EPERM): see the sysctl "
                      "kernel.io_uring_disabled, seccomp or a container policy"; break;
    case ENOMEM: why = "io_uring ring could not be allocated (ENOMEM): locked-memory limit "
                       "(ulimit -l) too low?"; break;
    default: why = strerror(err); break;
    }
    PyObject *args = Py_BuildValue("(is)", err, why);
    if (args) {
        PyErr_SetObject(UringUnavailable, args);
        Py_DECREF(args);
    }
}

static int map_rings(RingObject *r, struct io_uring_params *p)
{
    /* without the SQ index array (6.6+) SQE i is simply slot i: nothing to map or write */
    int no_array = p->flags & SR_SETUP_NO_SQARRAY;
    unsigned last = p->sq_off.head;
    unsigned fields[] = {p->sq_off.tail, p->sq_off.ring_mask, p->sq_off.ring_entries,
                         p->sq_off.flags, p->sq_off.dropped};
    for (unsigned i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        last = fields[i] > last ? fields[i] : last;
    r->sq_map_size = no_array ? last + sizeof(unsigned)
                              : p->sq_off.array + p->sq_entries * sizeof(unsigned);
    r->cq_map_size = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    int single = p->features & IORING_FEAT_SINGLE_MMAP;
    if (single) {
        if (r->cq_map_size > r->sq_map_size)
            r->sq_map_size = r->cq_map_size;
        r->cq_map_size = r->sq_map_size;
    }
    r->sq_map = mmap(NULL, r->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     r->fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) {
        r->sq_map = NULL;
        return -1;
    }
    if (single) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         r->fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) {
            r->cq_map = NULL;
            return -1;
        }
    }
    r->sqe_map_size = p->sq_entries * sizeof(struct io_uring_sqe);
    r->sqe_map = mmap(NULL, r->sqe_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      r->fd, IORING_OFF_SQES);
    if (r->sqe_map == MAP_FAILED) {
        r->sqe_map = NULL;
        return -1;
    }
    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p->sq_off.head);
    r->sq_tail = (unsigned *)(sq + p->sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p->sq_off.ring_mask);
    r->sq_entries = (unsigned *)(sq + p->sq_off.ring_entries);
    r->sq_flags = (unsigned *)(sq + p->sq_off.flags);
    if (!no_array) {
        unsigned *array = (unsigned *)(sq + p->sq_off.array);
        for (unsigned i = 0; i < p->sq_entries; i++)
            array[i] = i;  /* identity: SQE i sits in slot i, so the array is written once */
    }
    r->sqes = r->sqe_map;
    r->cq_head = (unsigned *)(cq + p->cq_off.head);
    r->cq_tail = (unsigned *)(cq + p->cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p->cq_off.ring_mask);
    r->cq_entries = (unsigned *)(cq + p->cq_off.ring_entries);
    r->cq_overflow = (unsigned *)(cq + p->cq_off.overflow);
    r->cq_flags = (unsigned *)(cq + p->cq_off.flags);
    r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
    r->sq_local_tail = *r->sq_tail;
    return 0;
}

static void probe_ops(RingObject *r)
{
    size_t size = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, size);
    if (!probe)
        return;
    if (ring_register(r, IORING_REGISTER_PROBE, probe, 256) == 0) {
        for (int i = 0; i < probe->ops_len && i < SR_OP_COUNT; i++)
            r->probe[i] = (probe->ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
        r->have_probe = 1;
    }
    free(probe);
}

static void unmap_rings(RingObject *r)
{
    if (r->sqe_map)
        munmap(r->sqe_map, r->sqe_map_size);
    if (r->cq_map && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_size);
    if (r->sq_map)
        munmap(r->sq_map, r->sq_map_size);
    r->sqe_map = r->cq_map = r->sq_map = NULL;
}

static int Ring_init(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"entries", "cq_entries", "flags", "sqpoll", NULL};
    unsigned entries = 256, cq_entries = 0;
    PyObject *flags_obj = Py_None;
    int sqpoll = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|IIOp:Ring", kwlist, &entries, &cq_entries,
                                     &flags_obj, &sqpoll))
        return -1;
    if (r->fd >= 0 || r->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Ring.__init__ called twice");
        return -1;
    }
    if (entries < 1 || entries > 32768) {
        PyErr_SetString(PyExc_ValueError, "entries must be between 1 and 32768");
        return -1;
    }
    if (cq_entries == 0)
        cq_entries = entries * 4;  /* completions may burst (multishot, ZC notifications) */
    if (cq_entries < entries || cq_entries > 65536) {
        PyErr_SetString(PyExc_ValueError, "cq_entries must be >= entries and <= 65536");
        return -1;
    }
    unsigned flags = 0, nflags = sizeof(wanted_flags) / sizeof(wanted_flags[0]);
    int explicit = flags_obj != Py_None;
    if (explicit) {
        flags = PyLong_AsUnsignedLong(flags_obj);
        if (PyErr_Occurred())
            return -1;
    } else {
        for (unsigned i = 0; i < nflags; i++)
            flags |= wanted_flags[i];
    }
    if (sqpoll)
        flags = (flags | IORING_SETUP_SQPOLL) & ~(IORING_SETUP_DEFER_TASKRUN);

    struct io_uring_params p;
    int fd;
    unsigned drop = 0;
    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = flags;
        p.cq_entries = cq_entries;
        fd = sys_setup(entries, &p);
        if (fd >= 0 || errno != EINVAL || explicit || drop >= nflags)
            break;
        flags &= ~wanted_flags[drop++];  /* the kernel is older than this flag: do without */
    }
    if (fd < 0) {
        if (errno == EINVAL)
            PyErr_SetString(PyExc_ValueError, "the kernel refused these setup flags (EINVAL)");
        else
            unavailable(errno);
        return -1;
    }
    r->fd = fd;
    r->setup_flags = p.flags;
    r->features = p.features;
    if (map_rings(r, &p) < 0) {
        int err = errno;
        unmap_rings(r);
        close(fd);
        r->fd = -1;
        unavailable(err);
        return -1;
    }
    r->fork_generation = sr_fork_generation;
    r->owner = pthread_self();
    register_ring_fd(r);
    probe_ops(r);
    return 0;
}

static PyObject *Ring_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    RingObject *r = (RingObject *)type->tp_alloc(type, 0);
    if (!r)
        return NULL;
    r->fd = -1;
    r->eventfd = -1;
    r->inflight.next = r->inflight.prev = &r->inflight;
    return (PyObject *)r;
}

/* ---- guards ----------------------------------------------------------------------------- */

/* The refusals behind ring_check_usable, kept out of line: the check itself runs per op. */
int ring_refuse(RingObject *r)
{
    if (r->fd < 0)
        PyErr_SetString(PyExc_ValueError, r->closed ? "I/O on a closed Ring" : "Ring not initialised");
    else if (r->closing)
        PyErr_SetString(PyExc_ValueError, "the Ring is closing: no new requests");
    else if (r->fork_generation != sr_fork_generation)
        PyErr_SetString(PyExc_RuntimeError,
                        "this Ring was created before fork(); a forked child must create its own");
    else
        PyErr_SetString(PyExc_RuntimeError,
                        "a Ring may only be used from the thread that created it");
    return -1;
}

int ring_op_supported(RingObject *r, int opcode)
{
    if (opcode < 0 || opcode >= SR_OP_COUNT)
        return 0;
    return r->have_probe ? r->probe[opcode] : opcode <= IORING_OP_LAST;
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

/* ---- completion ------------------------------------------------------------------------ */

static inline unsigned cq_ready(RingObject *r)
{
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

static int dispatch_batch_item(BatchItem *item, int32_t res, int silent, int *callbacks)
{
    BatchObject *b = item->batch;
    item->res = res;
    if (--b->remaining > 0)
        return 0;
    RequestObject *req = &b->base;
    if (req->callback && !silent)
        (*callbacks)++;
    return request_complete(req, res, 0, silent);
}

/* Dispatches ready CQEs. Each CQE is consumed (head advanced) before its handler runs, so
 * a handler may submit or even wait again. Python callbacks are limited to max_callbacks
 * (-1: all). Returns callbacks run, or -1 with an exception (remaining CQEs stay queued). */
static int dispatch(RingObject *r, int max_callbacks)
{
    int callbacks = 0;
    while ((max_callbacks < 0 || callbacks < max_callbacks) && r->fd >= 0) {
        unsigned head = *r->cq_head;
        if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
            break;
        struct io_uring_cqe cqe = r->cqes[head & *r->cq_mask];
        __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
        uintptr_t tag = cqe.user_data & SR_TAG_MASK;
        void *target = (void *)(uintptr_t)(cqe.user_data & ~(uint64_t)SR_TAG_MASK);
        if (!target)
            continue;
        int rc;
        if (tag == SR_TAG_CAPI) {
            sr_completion *c = target;
            rc = c->handler(c, cqe.res, cqe.flags);
        } else if (tag == SR_TAG_BATCH_ITEM) {
            rc = dispatch_batch_item(target, cqe.res, r->silent, &callbacks);
        } else {
            RequestObject *req = target;
            if (req->callback && !r->silent)
                callbacks++;
            rc = request_complete(req, cqe.res, cqe.flags, r->silent);
        }
        if (rc < 0)
            return -1;
        if (r->fd < 0)
            break;  /* a callback closed the ring: its queues are gone */
    }
    return callbacks;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits for CQEs without ever exceeding timeout_ns (seed 001, problem a). The first enter
 * submits and runs deferred task work without blocking, holding the GIL: most completions
 * are ready by then and this costs one syscall. Only if that is not enough does it block,
 * with the GIL released, for at most the remaining time. */
static int wait_cqes(RingObject *r, unsigned min_complete, int64_t timeout_ns)
{
    int64_t deadline = timeout_ns >= 0 ? now_ns() + timeout_ns : 0;
    if (r->pending_head && ring_submit(r) < 0)
        return -1;
    unsigned n = r->sq_local_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    __atomic_store_n(r->sq_tail, r->sq_local_tail, __ATOMIC_RELEASE);
    if (n > 0 || min_complete == 0 || cq_ready(r) < min_complete) {
        if (sys_enter(r, n, 0, IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR &&
            errno != EAGAIN && errno != EBUSY) {
            sr_oserror(errno, "io_uring_enter");
            return -1;
        }
    }
    while (cq_ready(r) < min_complete && timeout_ns != 0) {
        struct __kernel_timespec ts;
        struct io_uring_getevents_arg arg;
        memset(&arg, 0, sizeof(arg));
        if (timeout_ns > 0) {
            int64_t left = deadline - now_ns();
            if (left <= 0)
                return 0;
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            arg.ts = (uint64_t)(uintptr_t)&ts;
        }
        unsigned want = min_complete - cq_ready(r);
        int ret, err;
        Py_BEGIN_ALLOW_THREADS
        ret = sys_enter(r, 0, want, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                        sizeof(arg));
        err = errno;
        Py_END_ALLOW_THREADS
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
        }
    }
    return 0;
}

int ring_wait_and_dispatch(RingObject *r, unsigned min_complete, int64_t timeout_ns,
                           int max_callbacks)
{
    if (ring_check_usable(r) < 0)
        return -1;
    if (wait_cqes(r, min_complete, timeout_ns) < 0)
        return -1;
    return dispatch(r, max_callbacks);
}

/* ---- closing ---------------------------------------------------------------------------- */

static void cancel_everything(RingObject *r)
{
    struct io_uring_sqe *sqe = ring_next_sqe(r);
    if (!sqe) {
        PyErr_Clear();
        return;
    }
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
    sqe->user_data = 0;
}

/* Cancels what is in flight and reaps it, so no buffer is released while the kernel may
 * still write to it. Requests that outlive the grace period are leaked on purpose: their
 * memory stays valid, which a use-after-free would not. */
static int drain(RingObject *r, int silent)
{
    if (r->ninflight == 0)
        return 0;
    int was_silent = r->silent;
    r->silent = silent;
    cancel_everything(r);
    r->closing = 1;  /* callbacks run with -ECANCELED and may not start anything new */
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    int64_t deadline = now_ns() + 5 * 1000000000LL;
    while (r->ninflight > 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0)
            break;
        if (wait_cqes(r, 1, left < 100000000 ? left : 100000000) < 0 || dispatch(r, -1) < 0) {
            /* keep reaping: the first error is reported once everything is released */
            if (!et && !silent)
                PyErr_Fetch(&et, &ev, &tb);
            else
                PyErr_Clear();
        }
    }
    r->closing = 0;
    r->silent = was_silent;
    if (et) {
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return 0;
}

static void free_pending(RingObject *r)
{
    while (r->pending_head) {
        PendingSQE *p = r->pending_head;
        r->pending_head = p->next;
        PyMem_Free(p);
    }
    r->pending_tail = NULL;
    r->npending = 0;
}

static void release_registered(RingObject *r)
{
    for (int i = 0; i < r->nregistered; i++)
        PyBuffer_Release(&r->registered[i]);
    PyMem_Free(r->registered);
    r->registered = NULL;
    r->nregistered = 0;
}

/* Forget in-flight requests without touching their buffers (leaked on purpose). */
static void abandon_inflight(RingObject *r)
{
    if (r->ninflight > 0 && r->fork_generation == sr_fork_generation) {
        PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                         "Ring closed with %zd request(s) the kernel did not finish; "
                         "their buffers are leaked rather than freed under the kernel",
                         r->ninflight);
        PyErr_Clear();
    }
    for (RequestObject *q = r->inflight.next; q != &r->inflight; q = q->next)
        q->ring = NULL;
    r->inflight.next = r->inflight.prev = &r->inflight;
    r->ninflight = 0;
}

/* The registration lives in the owner task's io_uring context and holds the ring file open:
 * it must go before close(), from that task. (A ring dropped by another thread keeps its
 * memory until the owner thread exits; rings belong to one thread anyway.) */
static void unregister_ring_fd(RingObject *r)
{
    if (!r->enter_flags)
        return;
    if (r->fork_generation == sr_fork_generation && pthread_equal(r->owner, pthread_self())) {
        struct io_uring_rsrc_update upd;
        memset(&upd, 0, sizeof(upd));
        upd.offset = (unsigned)r->enter_fd;
        ring_register(r, IORING_UNREGISTER_RING_FDS, &upd, 1);
    }
    r->enter_fd = r->fd;
    r->enter_flags = 0;
}

static void teardown(RingObject *r)
{
    unregister_ring_fd(r);
    free_pending(r);
    release_registered(r);
    bufrings_detach(r);
    Py_CLEAR(r->buf_rings);
    unmap_rings(r);
    if (r->eventfd >= 0)
        close(r->eventfd);
    r->eventfd = -1;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->closed = 1;
}

static PyObject *Ring_close(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (r->fd < 0)
        Py_RETURN_NONE;
    int rc = 0;
    if (r->fork_generation == sr_fork_generation && pthread_equal(r->owner, pthread_self()))
        rc = drain(r, 0);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    abandon_inflight(r);
    teardown(r);
    PyErr_Restore(et, ev, tb);
    if (rc < 0)
        return NULL;  /* a callback raised while the ring was being closed (it is closed) */
    Py_RETURN_NONE;
}

static void Ring_dealloc(RingObject *r)
{
    if (r->fd >= 0) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (r->fork_generation == sr_fork_generation && pthread_equal(r->owner, pthread_self()))
            drain(r, 1);
        abandon_inflight(r);
        teardown(r);
        PyErr_Restore(et, ev, tb);
    }
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* ---- Python methods ------------------------------------------------------------------- */

static int64_t timeout_arg(PyObject *obj, int *ok)
{
    *ok = 1;
    if (obj == Py_None)
        return -1;
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) {
        *ok = 0;
        return 0;
    }
    if (t < 0 || t != t) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number of seconds or None");
        *ok = 0;
        return 0;
    }
    if (t > 1e9)
        return -1;
    return (int64_t)(t * 1e9);
}

static PyObject *Ring_submit(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (ring_check_usable(r) < 0)
        return NULL;
    int n = ring_submit(r);
    return n < 0 ? NULL : PyLong_FromLong(n);
}

static PyObject *Ring_wait(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"min_complete", "timeout", "max_callbacks", NULL};
    unsigned min_complete = 1;
    PyObject *timeout = Py_None;
    int max_callbacks = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|IOi:wait", kwlist, &min_complete, &timeout,
                                     &max_callbacks))
        return NULL;
    int ok;
    int64_t ns = timeout_arg(timeout, &ok);
    if (!ok)
        return NULL;
    if (min_complete > *r->cq_entries && r->fd >= 0) {
        PyErr_SetString(PyExc_ValueError, "min_complete exceeds the completion queue size");
        return NULL;
    }
    int n = ring_wait_and_dispatch(r, min_complete, ns, max_callbacks);
    return n < 0 ? NULL : PyLong_FromLong(n);
}

/* With an eventfd registered, every CQE the dispatch below makes the kernel post would signal
 * the eventfd again and wake the outside loop for nothing. So the eventfd is muted while we
 * run deferred work and dispatch; work that arrives in that window is seen afterwards through
 * IORING_SQ_TASKRUN (or ready CQEs) and handled before returning, so no wake-up is lost. */
static PyObject *Ring_process(RingObject *r, PyObject *unused)
{
    (void)unused;
    int mute = r->eventfd >= 0 && (r->setup_flags & IORING_SETUP_TASKRUN_FLAG);
    int total = 0;
    for (int round = 0; round < 16; round++) {
        if (mute)
            __atomic_or_fetch(r->cq_flags, IORING_CQ_EVENTFD_DISABLED, __ATOMIC_SEQ_CST);
        int n = ring_wait_and_dispatch(r, 0, 0, -1);
        if (!mute || r->fd < 0) {
            if (n < 0)
                return NULL;
            return PyLong_FromLong(total + n);
        }
        __atomic_and_fetch(r->cq_flags, ~IORING_CQ_EVENTFD_DISABLED, __ATOMIC_SEQ_CST);
        if (n < 0)
            return NULL;
        total += n;
        unsigned sqf = __atomic_load_n(r->sq_flags, __ATOMIC_SEQ_CST);
        if (!(sqf & IORING_SQ_TASKRUN) && cq_ready(r) == 0)
            return PyLong_FromLong(total);
    }
    /* still busy: make sure the outside loop comes back */
    uint64_t one = 1;
    if (write(r->eventfd, &one, sizeof(one)) < 0) {
        /* the counter is saturated, so it is readable anyway */
    }
    return PyLong_FromLong(total);
}

/* Closes fd for real: cancels every pending request on it, reaps those cancellations, then
 * closes. A pending POLL_ADD or RECV holds a reference to the file, so a plain close() would
 * neither end them nor shut a socket down (seed 001, problem b). */
static PyObject *Ring_close_fd(RingObject *r, PyObject *arg)
{
    int fd = sr_as_int(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "fd must be >= 0");
        return NULL;
    }
    if (ring_check_usable(r) < 0)
        return NULL;
    for (int round = 0;; round++) {
        Py_ssize_t pending = 0;
        for (RequestObject *q = r->inflight.next; q != &r->inflight; q = q->next)
            pending += q->fd == fd;
        if (pending == 0)
            break;
        if (round == 0 || round % 64 == 0) {
            struct io_uring_sqe *sqe = ring_next_sqe(r);
            if (!sqe)
                return NULL;
            sqe->opcode = IORING_OP_ASYNC_CANCEL;
            sqe->fd = fd;
            sqe->cancel_flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
            sqe->user_data = 0;
        }
        if (ring_wait_and_dispatch(r, 1, 100000000, -1) < 0)
            return NULL;
    }
    if (close(fd) < 0)
        return sr_oserror(errno, "close");
    Py_RETURN_NONE;
}

/* An eventfd the kernel signals when completions (or deferred task work) are ready; what
 * an outside event loop (asyncio) watches to know when to call process(). */
static PyObject *Ring_eventfd(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (ring_check_usable(r) < 0)
        return NULL;
    if (r->eventfd < 0) {
        int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0)
            return sr_oserror(errno, "eventfd");
        if (ring_register(r, IORING_REGISTER_EVENTFD, &efd, 1) < 0) {
            int err = errno;
            close(efd);
            return sr_oserror(err, "IORING_REGISTER_EVENTFD");
        }
        r->eventfd = efd;
    }
    return PyLong_FromLong(r->eventfd);
}

static PyObject *Ring_enter(RingObject *r, PyObject *unused)
{
    (void)unused;
    Py_INCREF(r);
    return (PyObject *)r;
}

static PyObject *Ring_exit(RingObject *r, PyObject *args)
{
    (void)args;
    return Ring_close(r, NULL);
}

static PyObject *Ring_supports(RingObject *r, PyObject *arg)
{
    if (PyLong_Check(arg))
        return PyBool_FromLong(ring_op_supported(r, sr_as_int(arg)));
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "supports() takes an opcode number or op name");
        return NULL;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    for (int i = 0; i < SR_OP_COUNT; i++)
        if (sr_op_names[i] && strcasecmp(name, sr_op_names[i]) == 0)
            return PyBool_FromLong(ring_op_supported(r, i));
    PyErr_Format(PyExc_ValueError, "unknown io_uring op %R", arg);
    return NULL;
}

static PyObject *Ring_get_ops(RingObject *r, void *closure)
{
    (void)closure;
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    for (int i = 0; i < SR_OP_COUNT; i++) {
        if (!sr_op_names[i])
            continue;
        if (PyDict_SetItemString(d, sr_op_names[i], ring_op_supported(r, i) ? Py_True : Py_False) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

#define RING_INT_GETTER(name, expr) \
    static PyObject *Ring_get_##name(RingObject *r, void *c) { (void)c; return PyLong_FromLongLong((long long)(expr)); }
RING_INT_GETTER(fd, r->fd)
RING_INT_GETTER(setup_flags, r->setup_flags)
RING_INT_GETTER(kernel_features, r->features)
RING_INT_GETTER(sq_entries, r->sq_entries ? *r->sq_entries : 0)
RING_INT_GETTER(cq_entries, r->cq_entries ? *r->cq_entries : 0)
RING_INT_GETTER(inflight, r->ninflight)
RING_INT_GETTER(queued, r->npending)
RING_INT_GETTER(cq_ready, r->cq_tail ? cq_ready(r) : 0)

static PyObject *Ring_get_closed(RingObject *r, void *c)
{
    (void)c;
    return PyBool_FromLong(r->fd < 0);
}

static PyGetSetDef Ring_getset[] = {
    {"fd", (getter)Ring_get_fd, NULL, "the ring's file descriptor (-1 once closed)", NULL},
    {"closed", (getter)Ring_get_closed, NULL, NULL, NULL},
    {"setup_flags", (getter)Ring_get_setup_flags, NULL, "IORING_SETUP_* flags the kernel accepted", NULL},
    {"kernel_features", (getter)Ring_get_kernel_features, NULL, "IORING_FEAT_* bits from setup", NULL},
    {"sq_entries", (getter)Ring_get_sq_entries, NULL, NULL, NULL},
    {"cq_entries", (getter)Ring_get_cq_entries, NULL, NULL, NULL},
    {"inflight", (getter)Ring_get_inflight, NULL, "requests submitted and not yet completed", NULL},
    {"queued", (getter)Ring_get_queued, NULL, "prepared requests waiting in user space for SQ room", NULL},
    {"cq_ready", (getter)Ring_get_cq_ready, NULL, "completions ready to dispatch", NULL},
    {"ops", (getter)Ring_get_ops, NULL, "{op name: supported} from IORING_REGISTER_PROBE", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Ring_methods[] = {
    {"submit", (PyCFunction)Ring_submit, METH_NOARGS,
     "submit() -> int\n\nHand every prepared request to the kernel, the user-space queue included."},
    {"wait", (PyCFunction)(void (*)(void))Ring_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(min_complete=1, timeout=None, max_callbacks=-1) -> int\n\nSubmit, wait until "
     "min_complete completions are ready or timeout seconds have passed (never longer), then "
     "dispatch ready completions. Returns the number of callbacks run."},
    {"process", (PyCFunction)Ring_process, METH_NOARGS,
     "process() -> int\n\nSubmit and dispatch whatever is ready, without blocking."},
    {"close_fd", (PyCFunction)Ring_close_fd, METH_O,
     "close_fd(fd)\n\nCancel every pending request on fd, reap the cancellations, then close fd."},
    {"eventfd", (PyCFunction)Ring_eventfd, METH_NOARGS,
     "eventfd() -> int\n\nAn eventfd that becomes readable when completions need processing."},
    {"supports", (PyCFunction)Ring_supports, METH_O,
     "supports(op) -> bool\n\nWhether the kernel supports op (a name like 'send_zc' or an opcode)."},
    {"close", (PyCFunction)Ring_close, METH_NOARGS,
     "close()\n\nCancel and reap in-flight requests (their callbacks run with -ECANCELED), "
     "then release the ring."},
    {"__enter__", (PyCFunction)Ring_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Ring_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef *all_methods(void)
{
    static PyMethodDef *merged;
    if (merged)
        return merged;
    PyMethodDef *tables[] = {Ring_methods, ring_op_methods, ring_register_methods};
    size_t total = 0, at = 0;
    for (size_t t = 0; t < 3; t++)
        for (PyMethodDef *m = tables[t]; m->ml_name; m++)
            total++;
    merged = PyMem_RawCalloc(total + 1, sizeof(PyMethodDef));
    if (!merged)
        return Ring_methods;
    for (size_t t = 0; t < 3; t++)
        for (PyMethodDef *m = tables[t]; m->ml_name; m++)
            merged[at++] = *m;
    return merged;
}

PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._uring.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Ring(entries=256, cq_entries=4*entries, flags=None, sqpoll=False)\n\n"
              "One io_uring instance. With flags=None it asks for DEFER_TASKRUN, SINGLE_ISSUER, "
              "COOP_TASKRUN, SUBMIT_ALL and a larger CQ, dropping what the kernel refuses. "
              "A Ring belongs to the thread that created it and does not survive fork().",
    .tp_init = (initproc)Ring_init,
    .tp_new = Ring_new,
    .tp_getset = Ring_getset,
};

int ring_type_ready(void)
{
    RingType.tp_methods = all_methods();
    return PyType_Ready(&RingType);
}

/* ---- the C API for other extensions --------------------------------------------------- */

static struct sr_ring *capi_from_object(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "expected a smbring.uring.Ring");
        return NULL;
    }
    return (struct sr_ring *)obj;
}

static struct io_uring_sqe *capi_get_sqe(struct sr_ring *ring, sr_completion *c)
{
    RingObject *r = (RingObject *)ring;
    if (ring_check_usable(r) < 0)
        return NULL;
    struct io_uring_sqe *sqe = ring_next_sqe(r);
    if (sqe)
        sqe->user_data = (uint64_t)(uintptr_t)c | SR_TAG_CAPI;
    return sqe;
}

static int capi_submit(struct sr_ring *ring)
{
    RingObject *r = (RingObject *)ring;
    if (ring_check_usable(r) < 0)
        return -1;
    return ring_submit(r);
}

static int capi_wait(struct sr_ring *ring, unsigned min_complete, int64_t timeout_ns, int max_cb)
{
    return ring_wait_and_dispatch((RingObject *)ring, min_complete, timeout_ns, max_cb);
}

static int capi_op_supported(struct sr_ring *ring, int opcode)
{
    return ring_op_supported((RingObject *)ring, opcode);
}

static Py_ssize_t capi_inflight(struct sr_ring *ring)
{
    return ((RingObject *)ring)->ninflight;
}

static unsigned capi_cq_ready(struct sr_ring *ring)
{
    RingObject *r = (RingObject *)ring;
    return r->cq_tail ? cq_ready(r) : 0;
}

const sr_ring_api sr_capi = {
    .version = SR_RING_API_VERSION,
    .from_object = capi_from_object,
    .get_sqe = capi_get_sqe,
    .submit = capi_submit,
    .wait_and_dispatch = capi_wait,
    .op_supported = capi_op_supported,
    .cq_ready = capi_cq_ready,
    .inflight = capi_inflight,
};
