/*
 * smbring._events: an event loop with tevent's semantics, in C; Python runs only handlers.
 *
 * The core (event.c, loop.c, context.c, signals.c) owns every event and decides what runs:
 * loop_once() runs exactly one handler, an immediate, else a signal, else an expired timer;
 * only when none is ready does it ask the backend to wait for fd readiness, with the next
 * timer as the timeout. A backend (backend_poll.c, backend_epoll.c, backend_uring.c) only
 * keeps the kernel told which fds are wanted for what, and waits: it is reached through
 * struct event_backend, as tevent reaches its backends through struct tevent_ops, and may
 * call only what this header declares.
 */
#ifndef SMBRING_EVENTS_H
#define SMBRING_EVENTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>

#define EV_READ 1
#define EV_WRITE 2
#define EV_ERROR 4
#define EV_ALL (EV_READ | EV_WRITE | EV_ERROR)
#define READY_MAX 64            /* ready fds one wait may report (uring gathers several) */

typedef struct ContextObject ContextObject;

/* Every event kind shares this head: a place in one of the context's lists. */
typedef struct EventObject {
    PyObject_HEAD
    ContextObject *ctx;             /* borrowed; NULL once cancelled */
    struct EventObject *prev, *next;
    PyObject *handler;
} EventObject;

typedef struct {
    EventObject base;
    int fd;
    int flags;
} FdEventObject;

typedef struct {
    EventObject base;
    int64_t deadline;               /* CLOCK_MONOTONIC ns */
} TimerObject;

typedef struct {
    EventObject base;
    int signum;
    uint64_t seen;                  /* signal count already reported to the handler */
} SignalObject;

typedef struct {
    EventObject head;               /* list sentinel; never a Python object */
} List;

/* ---- backends -------------------------------------------------------------------------------- */

struct event_backend {
    const char *name;               /* Context(backend=name) */
    /* Sets the backend up for a new context; ring is Context's ring= argument. A backend that
     * keeps state puts it in ctx->backend_state. -1 with an exception (release still runs). */
    int (*init)(ContextObject *ctx, PyObject *ring);
    /* Releases what init made, once, at close, after every event has been removed. */
    void (*release)(ContextObject *ctx);
    /* The events on fd changed (fd_union() says what they want now, 0: none are left);
     * `was_registered`: whether the fd had any before. -1 with an exception. */
    int (*fd_changed)(ContextObject *ctx, int fd, int was_registered);
    /* The context's first signal event: from now on the signal self-pipe must end a wait. */
    int (*watch_signal_pipe)(ContextObject *ctx, int pipe_fd);
    /* Waits at most timeout_ns (-1: no limit) and leaves what is ready in ctx->ready (or
     * nothing: a timeout, EINTR). 1 if a handler already ran inside the wait (a ring
     * completion's callback), 0 if not, -1 with an exception. */
    int (*wait)(ContextObject *ctx, int64_t timeout_ns);
    /* Work the core does not see is pending (ring ops in flight): loop_wait() goes on.
     * NULL: there never is. */
    int (*has_pending_work)(ContextObject *ctx);
    /* A wait may end for a reason the core does not see (a ring completion), so waiting
     * with no fd events, timers or signals is not waiting forever. */
    int waits_without_events;
};

extern const struct event_backend poll_backend, epoll_backend, uring_backend;

/* The epoll set both the epoll and the uring backend wait on (backend_epoll.c). */
int epoll_set_update(ContextObject *ctx, int epfd, int fd, int was_registered);
int epoll_set_watch(int epfd, int fd);

struct ContextObject {
    PyObject_HEAD
    const struct event_backend *backend;
    void *backend_state;            /* the backend's own, made by its init or first wait */
    int closed;
    List fds, timers, immediates, signals;
    Py_ssize_t nfds;
    /* fds ready from the last wait, which loop_once() hands out one at a time */
    struct epoll_event ready[READY_MAX];
    int nready, iready;
    PyObject *ring;                 /* the engine ring this context waits in (uring), or NULL */
};

/* ---- the core, for the backends and for each other ------------------------------------------ */

/* Lists: circular, with a sentinel head. */
static inline void list_init(List *l)
{
    l->head.prev = l->head.next = &l->head;
}

static inline int list_empty(List *l)
{
    return l->head.next == &l->head;
}

static inline void list_insert_before(EventObject *pos, EventObject *e)
{
    e->next = pos;
    e->prev = pos->prev;
    pos->prev->next = e;
    pos->prev = e;
}

static inline void list_unlink(EventObject *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

static inline int ctx_check(ContextObject *ctx)
{
    if (ctx->closed) {
        PyErr_SetString(PyExc_ValueError, "the event context is closed");
        return -1;
    }
    return 0;
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* What epoll reports, as READ/WRITE/ERROR: errors and hang-ups wake readers and writers. */
static inline int revents_to_flags(uint32_t ev)
{
    int f = 0;
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
        f |= EV_READ;
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        f |= EV_WRITE;
    if (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
        f |= EV_ERROR;
    return f;
}

/* What to ask epoll for, for READ/WRITE/ERROR. */
static inline uint32_t flags_to_epoll(int flags)
{
    uint32_t m = 0;
    if (flags & EV_READ)
        m |= EPOLLIN;
    if (flags & EV_WRITE)
        m |= EPOLLOUT;
    if (flags & EV_ERROR)
        m |= EPOLLRDHUP;
    return m;
}

/* A wait's timeout in ms for poll and epoll_wait, rounded up: never wake early. */
static inline int timeout_ms(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    int64_t ms = (timeout_ns + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* event.c: the event objects */
extern PyTypeObject FdEventType, TimerType, ImmediateType, SignalType;
EventObject *event_new(PyTypeObject *type, ContextObject *ctx, PyObject *handler);
void event_detach(EventObject *e);
int fd_union(ContextObject *ctx, int fd);
int fd_sync(ContextObject *ctx, int fd, int was_registered);

/* loop.c: running handlers */
int loop_once(ContextObject *ctx, int64_t max_wait_ns);

/* context.c: the Context type */
extern PyTypeObject ContextType;

/* signals.c: process-wide signal state (counters, a self-pipe that ends waits) */
int signal_pipe_open(void);
int signal_pipe_fd(void);
void signal_pipe_drain(void);
uint64_t signal_count(int signum);
int signal_watch(int signum);
void signal_unwatch(int signum);
void signal_wait_begin(void);
void signal_wait_end(void);

#endif
