/*
 * The poll backend: a pollfd array rebuilt only when the events changed, one poll() per
 * wait, and the first ready event in list order is the step's handler.
 */
#include "events.h"

#include <errno.h>
#include <poll.h>

typedef struct {
    struct pollfd *pfds;
    Py_ssize_t npfds, cap;
    int stale;                      /* the events changed since pfds was built */
} PollState;

/* Made by init, or at first use by a Context whose __init__ never ran (it polls too). */
static PollState *poll_state(ContextObject *ctx)
{
    if (!ctx->backend_state) {
        PollState *p = PyMem_Calloc(1, sizeof(*p));
        if (!p)
            return (PollState *)PyErr_NoMemory();
        p->stale = 1;
        ctx->backend_state = p;
    }
    return ctx->backend_state;
}

static int poll_init(ContextObject *ctx, PyObject *ring)
{
    (void)ring;
    return poll_state(ctx) ? 0 : -1;
}

static void poll_release(ContextObject *ctx)
{
    PollState *p = ctx->backend_state;
    if (p) {
        PyMem_Free(p->pfds);
        PyMem_Free(p);
    }
    ctx->backend_state = NULL;
}

static int poll_fd_changed(ContextObject *ctx, int fd, int was_registered)
{
    (void)fd;
    (void)was_registered;
    PollState *p = ctx->backend_state;
    if (p)
        p->stale = 1;
    return 0;
}

static int poll_watch_signal_pipe(ContextObject *ctx, int pipe_fd)
{
    return poll_fd_changed(ctx, pipe_fd, 0);
}

/* poll's and epoll's event bits are the same on Linux: flags_to_epoll() serves for both, and
 * what poll reports is what the ready list holds, but for POLLNVAL (a closed fd: an error). */
_Static_assert(POLLIN == EPOLLIN && POLLOUT == EPOLLOUT && POLLERR == EPOLLERR &&
               POLLHUP == EPOLLHUP && POLLRDHUP == EPOLLRDHUP, "poll and epoll bits differ");

static uint32_t epoll_events(short revents)
{
    uint32_t ev = (uint16_t)revents & (POLLIN | POLLOUT | POLLERR | POLLHUP | POLLRDHUP);
    return revents & POLLNVAL ? ev | EPOLLERR : ev;
}

/* One pollfd per fd event (READ and WRITE events on one fd get one each), and the signal
 * self-pipe while the context has signal events. */
static int rebuild(ContextObject *ctx, PollState *p)
{
    Py_ssize_t need = ctx->nfds + 1;
    if (need > p->cap) {
        struct pollfd *pfds = PyMem_Realloc(p->pfds, (size_t)need * sizeof(*pfds));
        if (!pfds) {
            PyErr_NoMemory();
            return -1;
        }
        p->pfds = pfds;
        p->cap = need;
    }
    Py_ssize_t n = 0;
    for (EventObject *e = ctx->fds.head.next; e != &ctx->fds.head; e = e->next) {
        FdEventObject *f = (FdEventObject *)e;
        short m = (short)flags_to_epoll(f->flags);
        if (!m)
            continue;
        p->pfds[n].fd = f->fd;
        p->pfds[n].events = m;
        n++;
    }
    if (!list_empty(&ctx->signals)) {
        p->pfds[n].fd = signal_pipe_fd();
        p->pfds[n].events = POLLIN;
        n++;
    }
    p->npfds = n;
    p->stale = 0;
    return 0;
}

static int poll_wait(ContextObject *ctx, int64_t timeout_ns)
{
    PollState *p = poll_state(ctx);
    if (!p || (p->stale && rebuild(ctx, p) < 0))
        return -1;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = poll(p->pfds, (nfds_t)p->npfds, timeout_ms(timeout_ns));
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return errno == EINTR ? 0 : (PyErr_SetFromErrno(PyExc_OSError), -1);
    /* one handler per step: the first ready event in list order (the list rotates) */
    for (EventObject *e = ctx->fds.head.next; rc > 0 && e != &ctx->fds.head; e = e->next) {
        FdEventObject *f = (FdEventObject *)e;
        for (Py_ssize_t i = 0; i < p->npfds; i++) {
            struct pollfd *pfd = &p->pfds[i];
            if (pfd->fd != f->fd || !pfd->revents)
                continue;
            uint32_t ev = epoll_events(pfd->revents);
            if (revents_to_flags(ev) & f->flags) {
                ctx->ready[0].events = ev;
                ctx->ready[0].data.fd = f->fd;
                ctx->nready = 1;
                ctx->iready = 0;
                return 0;
            }
        }
    }
    return 0;
}

const struct event_backend poll_backend = {
    .name = "poll",
    .init = poll_init,
    .release = poll_release,
    .fd_changed = poll_fd_changed,
    .watch_signal_pipe = poll_watch_signal_pipe,
    .wait = poll_wait,
};
