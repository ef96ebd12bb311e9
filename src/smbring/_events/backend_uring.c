/*
 * The uring backend: waits only in io_uring_enter, on the engine's ring (shared through the
 * smbring._uring._C_API capsule, uring_api.h). An IORING_OP_EPOLL_WAIT on a level-triggered
 * epoll set (kept as the epoll backend keeps its own) gathers up to READY_MAX ready fds per
 * wait, which the following loop_once() calls hand out one by one without entering the
 * kernel. Where the kernel lacks EPOLL_WAIT, a multishot POLL_ADD on the epoll fd wakes the
 * ring and a non-blocking epoll_wait collects the events. Completions of ring ops issued from
 * Python are dispatched in the same wait, each counting as the step's one handler.
 */
#include "events.h"
#include "uring_api.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

static const sr_ring_api *capi;

typedef struct {
    sr_completion wait_done;        /* the EPOLL_WAIT (or POLL_ADD) completion */
    sr_completion cancel_done;      /* the ASYNC_CANCEL of the wait, at close */
    ContextObject *ctx;             /* NULL once the context let go of this state */
    struct sr_ring *sr;
    int epfd;
    int armed;                      /* the wait is in the kernel */
    int multishot;                  /* POLL_ADD on the epoll fd instead of EPOLL_WAIT */
    int cancel_pending;
    struct epoll_event events[READY_MAX];   /* where EPOLL_WAIT reports */
} UringState;

#define STATE_OF(c, member) ((UringState *)(void *)((char *)(c) - offsetof(UringState, member)))

/* The wait's completion, handled in C inside the ring's dispatch: what is ready goes to the
 * context's ready list. */
static int on_wait_done(sr_completion *c, int32_t res, uint32_t flags)
{
    UringState *u = STATE_OF(c, wait_done);
    if (!(flags & IORING_CQE_F_MORE))
        u->armed = 0;
    ContextObject *ctx = u->ctx;
    if (!ctx || ctx->closed)
        return 0;
    if (u->multishot) {
        if (res >= 0) {
            int n = epoll_wait(u->epfd, ctx->ready, READY_MAX, 0);
            ctx->nready = n > 0 ? n : 0;
            ctx->iready = 0;
        }
    } else if (res > 0) {
        memcpy(ctx->ready, u->events, (size_t)res * sizeof(struct epoll_event));
        ctx->nready = res;
        ctx->iready = 0;
    }
    return 0;
}

static int on_cancel_done(sr_completion *c, int32_t res, uint32_t flags)
{
    (void)res;
    (void)flags;
    STATE_OF(c, cancel_done)->cancel_pending = 0;
    return 0;
}

static int import_capi(void)
{
    if (capi)
        return 0;
    capi = PyCapsule_Import("smbring._uring._C_API", 0);
    if (!capi)
        return -1;
    if (capi->version != SR_RING_API_VERSION) {
        capi = NULL;
        PyErr_SetString(PyExc_ImportError, "smbring._uring C API version mismatch");
        return -1;
    }
    return 0;
}

static int uring_init(ContextObject *ctx, PyObject *ring)
{
    UringState *u = PyMem_Calloc(1, sizeof(*u));
    if (!u) {
        PyErr_NoMemory();
        return -1;
    }
    ctx->backend_state = u;
    u->ctx = ctx;
    u->wait_done.handler = on_wait_done;
    u->cancel_done.handler = on_cancel_done;
    u->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (u->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (import_capi() < 0)
        return -1;
    if (ring == Py_None) {
        PyErr_SetString(PyExc_TypeError, "the uring backend needs ring=smbring.uring.Ring(...)");
        return -1;
    }
    u->sr = capi->from_object(ring);
    if (!u->sr)
        return -1;
    ctx->ring = Py_NewRef(ring);
    if (!capi->op_supported(u->sr, SR_OP_EPOLL_WAIT)) {
        if (!capi->op_supported(u->sr, IORING_OP_POLL_ADD)) {
            PyErr_SetString(PyExc_OSError, "the ring has neither EPOLL_WAIT nor POLL_ADD");
            return -1;
        }
        u->multishot = 1;
    }
    return 0;
}

/* Cancels a pending wait and reaps it: the kernel writes into the state until then. If it
 * does not finish, the state is leaked rather than freed under the kernel. */
static void uring_release(ContextObject *ctx)
{
    UringState *u = ctx->backend_state;
    ctx->backend_state = NULL;
    if (!u)
        return;
    if (u->sr && u->armed) {
        struct io_uring_sqe *sqe = capi->get_sqe(u->sr, &u->cancel_done);
        if (sqe) {
            sqe->opcode = IORING_OP_ASYNC_CANCEL;
            sqe->fd = -1;
            sqe->addr = SR_CAPI_USER_DATA(&u->wait_done);
            u->cancel_pending = 1;
            for (int i = 0; i < 1000 && (u->armed || u->cancel_pending); i++)
                if (capi->wait_and_dispatch(u->sr, 1, 10000000, 0) < 0)
                    PyErr_Clear();
        } else {
            PyErr_Clear();
        }
    }
    if (u->epfd >= 0)
        close(u->epfd);
    u->ctx = NULL;
    if (!u->armed && !u->cancel_pending)
        PyMem_Free(u);
}

static int uring_fd_changed(ContextObject *ctx, int fd, int was_registered)
{
    return epoll_set_update(ctx, ((UringState *)ctx->backend_state)->epfd, fd, was_registered);
}

static int uring_watch_signal_pipe(ContextObject *ctx, int pipe_fd)
{
    return epoll_set_watch(((UringState *)ctx->backend_state)->epfd, pipe_fd);
}

/* One wait in the kernel at a time, re-armed only once it has completed (a multishot
 * POLL_ADD stays armed). */
static int arm_wait(UringState *u)
{
    if (u->armed)
        return 0;
    struct io_uring_sqe *sqe = capi->get_sqe(u->sr, &u->wait_done);
    if (!sqe)
        return -1;
    sqe->fd = u->epfd;
    if (u->multishot) {
        sqe->opcode = IORING_OP_POLL_ADD;
        sqe->poll32_events = POLLIN;
        sqe->len = IORING_POLL_ADD_MULTI;
    } else {
        sqe->opcode = SR_OP_EPOLL_WAIT;
        sqe->addr = (uint64_t)(uintptr_t)u->events;
        sqe->len = READY_MAX;
    }
    u->armed = 1;
    return 0;
}

static int uring_wait(ContextObject *ctx, int64_t timeout_ns)
{
    UringState *u = ctx->backend_state;
    if (arm_wait(u) < 0)
        return -1;
    /* at most one Python callback: it is this step's handler */
    int ran = capi->wait_and_dispatch(u->sr, 1, timeout_ns, 1);
    if (ran < 0) {
        if (PyErr_ExceptionMatches(PyExc_OSError) && errno == EINTR) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    return ran > 0;
}

static int uring_has_pending_work(ContextObject *ctx)
{
    UringState *u = ctx->backend_state;
    return u && u->sr && capi->inflight(u->sr) > 0;
}

const struct event_backend uring_backend = {
    .name = "uring",
    .init = uring_init,
    .release = uring_release,
    .fd_changed = uring_fd_changed,
    .watch_signal_pipe = uring_watch_signal_pipe,
    .wait = uring_wait,
    .has_pending_work = uring_has_pending_work,
    .waits_without_events = 1,
};
