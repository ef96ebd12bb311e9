/*
 * The epoll backend: a level-triggered epoll set holding the union of each fd's events, and
 * one ready event per epoll_wait (maxevents = 1, as tevent's epoll backend), so no stale
 * readiness is ever handed out. The uring backend waits on such a set too, and shares the
 * code that keeps it (epoll_set_*).
 */
#include "events.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int epfd;
} EpollState;

/* After any change to the events on fd: tell epoll what the fd is now wanted for. */
int epoll_set_update(ContextObject *ctx, int epfd, int fd, int was_registered)
{
    int wanted = fd_union(ctx, fd);
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = flags_to_epoll(wanted);
    ev.data.fd = fd;
    if (wanted == 0) {
        if (was_registered && epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 &&
            errno != ENOENT && errno != EBADF) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        return 0;
    }
    int op = was_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(epfd, op, fd, &ev) < 0) {
        /* the kernel's view differs from ours (the fd was closed and reused): reconcile */
        int retry = errno == ENOENT ? EPOLL_CTL_ADD : errno == EEXIST ? EPOLL_CTL_MOD : -1;
        if (retry < 0 || epoll_ctl(epfd, retry, fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* fd (the signal self-pipe) ends waits on the set from now on. */
int epoll_set_watch(int epfd, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 && errno != EEXIST) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int epoll_init(ContextObject *ctx, PyObject *ring)
{
    (void)ring;
    EpollState *s = PyMem_Malloc(sizeof(*s));
    if (!s) {
        PyErr_NoMemory();
        return -1;
    }
    ctx->backend_state = s;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void epoll_release(ContextObject *ctx)
{
    EpollState *s = ctx->backend_state;
    if (s && s->epfd >= 0)
        close(s->epfd);
    PyMem_Free(s);
    ctx->backend_state = NULL;
}

static int epoll_fd_changed(ContextObject *ctx, int fd, int was_registered)
{
    return epoll_set_update(ctx, ((EpollState *)ctx->backend_state)->epfd, fd, was_registered);
}

static int epoll_watch_signal_pipe(ContextObject *ctx, int pipe_fd)
{
    return epoll_set_watch(((EpollState *)ctx->backend_state)->epfd, pipe_fd);
}

static int epoll_wait_one(ContextObject *ctx, int64_t timeout_ns)
{
    int epfd = ((EpollState *)ctx->backend_state)->epfd;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = epoll_wait(epfd, ctx->ready, 1, timeout_ms(timeout_ns));
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return errno == EINTR ? 0 : (PyErr_SetFromErrno(PyExc_OSError), -1);
    ctx->nready = rc;
    ctx->iready = 0;
    return 0;
}

const struct event_backend epoll_backend = {
    .name = "epoll",
    .init = epoll_init,
    .release = epoll_release,
    .fd_changed = epoll_fd_changed,
    .watch_signal_pipe = epoll_watch_signal_pipe,
    .wait = epoll_wait_one,
};
