/*
 * smbring._events: an event loop with tevent's semantics, in C; Python runs only handlers.
 *
 *   loop_once() runs exactly one handler: an immediate, else a signal, else an expired
 *   timer (all handled here in the core); only when none is ready does the backend wait for
 *   fd readiness, with the next timer as the timeout. fd events are level-triggered and fair:
 *   the event just handled moves to the end of the list. READ and WRITE may have separate
 *   handlers on one fd; flags can be changed while live; ERROR reports errors and hang-ups.
 *
 * Backends: poll, epoll (one event per wait, as tevent's epoll backend), and uring, which
 * waits only in io_uring_enter on the engine's ring: an IORING_OP_EPOLL_WAIT on an internal
 * level-triggered epoll set (or a multishot POLL_ADD on that epoll fd where the kernel lacks
 * EPOLL_WAIT) gathers up to 64 ready fds per wait, which later loop_once() calls hand out
 * one by one without entering the kernel; completions of ring ops issued from Python are
 * dispatched in the same wait, each counting as the step's one handler.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "uring_api.h"

#define EV_READ 1
#define EV_WRITE 2
#define EV_ERROR 4
#define EV_ALL (EV_READ | EV_WRITE | EV_ERROR)
#define READY_MAX 64

enum backend { B_POLL, B_EPOLL, B_URING };
static const char *backend_names[] = {"poll", "epoll", "uring"};

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

struct ContextObject {
    PyObject_HEAD
    int backend;
    int closed;
    List fds, timers, immediates, signals;
    Py_ssize_t nfds;
    int epfd;                       /* epoll and uring backends */
    int fds_changed;                /* poll: rebuild the pollfd array */
    struct pollfd *pfds;
    Py_ssize_t npfds, cap_pfds;
    /* fds ready from the last wait, handed out one per loop_once (uring) */
    struct epoll_event ready[READY_MAX];
    int nready, iready;
    /* uring */
    PyObject *ring;
    struct sr_ring *sr;
    struct {
        sr_completion c;
        ContextObject *ctx;
        int armed;
        int multishot;              /* POLL_ADD on the epoll fd instead of EPOLL_WAIT */
        int fired;
        struct epoll_event events[READY_MAX];
    } wait;
    struct {
        sr_completion c;
        int pending;
    } cancel;
};

static PyTypeObject ContextType, FdEventType, TimerType, ImmediateType, SignalType;
static const sr_ring_api *capi;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- lists ------------------------------------------------------------------------------ */

static void list_init(List *l)
{
    l->head.prev = l->head.next = &l->head;
}

static int list_empty(List *l)
{
    return l->head.next == &l->head;
}

static void list_insert_before(EventObject *pos, EventObject *e)
{
    e->next = pos;
    e->prev = pos->prev;
    pos->prev->next = e;
    pos->prev = e;
}

static void list_unlink(EventObject *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

/* ---- signals: process-wide counters, a self-pipe to wake the waits ------------------------ */

static int sig_pending;            /* set by the handler, cleared when the pipe is drained */
static int sig_waiters;            /* contexts inside a wait, which a signal must interrupt */
static uint64_t sig_counts[NSIG];
static int sig_pipe[2] = {-1, -1};
static int sig_users[NSIG];
static struct sigaction sig_saved[NSIG];

static void on_signal(int signum)
{
    int saved = errno;
    __atomic_add_fetch(&sig_counts[signum], 1, __ATOMIC_SEQ_CST);
    /* A loop that is running sees the counter at its next step; only a loop blocked in a
     * wait needs the pipe to wake it (saves a write and a read per signal). */
    if (__atomic_load_n(&sig_waiters, __ATOMIC_SEQ_CST) &&
        !__atomic_exchange_n(&sig_pending, 1, __ATOMIC_SEQ_CST) && sig_pipe[1] >= 0) {
        /* one byte per batch of signals is enough to end a wait */
        char b = (char)signum;
        ssize_t rc = write(sig_pipe[1], &b, 1);
        (void)rc;
    }
    errno = saved;
}

static int sig_pipe_open(void)
{
    if (sig_pipe[0] >= 0)
        return 0;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Only when the handler said so: no syscall per loop step. The flag is cleared before the
 * pipe is read, so a signal arriving meanwhile writes a new byte and is not lost. */
static void sig_pipe_drain(void)
{
    if (!__atomic_exchange_n(&sig_pending, 0, __ATOMIC_SEQ_CST))
        return;
    char buf[64];
    while (sig_pipe[0] >= 0 && read(sig_pipe[0], buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ;
}

/* ---- backend: registering fds -------------------------------------------------------------- */

static uint32_t epoll_mask(int flags)
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

/* Union of the flags of all live fd events on fd. */
static int fd_union(ContextObject *ctx, int fd)
{
    int u = 0;
    for (EventObject *e = ctx->fds.head.next; e != &ctx->fds.head; e = e->next) {
        FdEventObject *f = (FdEventObject *)e;
        if (f->fd == fd)
            u |= f->flags;
    }
    return u;
}

/* After any change to the events on fd: tell epoll what the fd is now wanted for. */
static int fd_sync(ContextObject *ctx, int fd, int was_registered)
{
    ctx->fds_changed = 1;
    ctx->nready = ctx->iready = 0;  /* cached readiness may no longer match the events */
    if (ctx->backend == B_POLL)
        return 0;
    int u = fd_union(ctx, fd);
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = epoll_mask(u);
    ev.data.fd = fd;
    if (u == 0) {
        if (was_registered && epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 &&
            errno != ENOENT && errno != EBADF) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        return 0;
    }
    int op = was_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(ctx->epfd, op, fd, &ev) < 0) {
        /* the kernel's view differs from ours (the fd was closed and reused): reconcile */
        int retry = errno == ENOENT ? EPOLL_CTL_ADD : errno == EEXIST ? EPOLL_CTL_MOD : -1;
        if (retry < 0 || epoll_ctl(ctx->epfd, retry, fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* ---- the context -------------------------------------------------------------------------- */

static int ctx_check(ContextObject *ctx)
{
    if (ctx->closed) {
        PyErr_SetString(PyExc_ValueError, "the event context is closed");
        return -1;
    }
    return 0;
}

static EventObject *event_new(PyTypeObject *type, ContextObject *ctx, PyObject *handler)
{
    if (ctx_check(ctx) < 0)
        return NULL;
    if (!PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable");
        return NULL;
    }
    EventObject *e = PyObject_GC_New(EventObject, type);
    if (!e)
        return NULL;
    size_t extra = (size_t)type->tp_basicsize - sizeof(PyObject);
    memset((char *)e + sizeof(PyObject), 0, extra);
    e->ctx = ctx;
    e->handler = Py_NewRef(handler);
    PyObject_GC_Track(e);
    return e;
}

/* The context holds one reference to every live event (taken in add_*, dropped here). */
static void event_detach(EventObject *e)
{
    if (!e->ctx)
        return;
    ContextObject *ctx = e->ctx;
    list_unlink(e);
    e->ctx = NULL;
    if (Py_IS_TYPE(e, &FdEventType)) {
        FdEventObject *f = (FdEventObject *)e;
        ctx->nfds--;
        if (fd_sync(ctx, f->fd, 1) < 0)
            PyErr_Clear();  /* the fd may already be closed: nothing left to unregister */
    } else if (Py_IS_TYPE(e, &SignalType)) {
        int signum = ((SignalObject *)e)->signum;
        if (--sig_users[signum] == 0)
            sigaction(signum, &sig_saved[signum], NULL);
    }
    Py_DECREF(e);
}

static PyObject *Context_add_fd(ContextObject *ctx, PyObject *args)
{
    int fd, flags;
    PyObject *handler;
    if (!PyArg_ParseTuple(args, "iiO:add_fd", &fd, &flags, &handler))
        return NULL;
    if (fd < 0 || flags & ~EV_ALL) {
        PyErr_SetString(PyExc_ValueError, "fd must be >= 0 and flags a combination of READ, WRITE, ERROR");
        return NULL;
    }
    FdEventObject *f = (FdEventObject *)event_new(&FdEventType, ctx, handler);
    if (!f)
        return NULL;
    f->fd = fd;
    int registered = fd_union(ctx, fd) != 0;
    f->flags = flags;
    list_insert_before(&ctx->fds.head, &f->base);
    ctx->nfds++;
    Py_INCREF(f);
    if (fd_sync(ctx, fd, registered) < 0) {
        event_detach(&f->base);
        Py_DECREF(f);
        return NULL;
    }
    return (PyObject *)f;
}

static TimerObject *timer_insert(ContextObject *ctx, TimerObject *t)
{
    /* sorted by deadline; equal deadlines keep insertion order */
    EventObject *pos = ctx->timers.head.next;
    while (pos != &ctx->timers.head && ((TimerObject *)pos)->deadline <= t->deadline)
        pos = pos->next;
    list_insert_before(pos, &t->base);
    Py_INCREF(t);
    return t;
}

static PyObject *Context_add_timer(ContextObject *ctx, PyObject *args)
{
    double delay;
    PyObject *handler;
    if (!PyArg_ParseTuple(args, "dO:add_timer", &delay, &handler))
        return NULL;
    if (!(delay >= 0) || delay > 1e9) {
        PyErr_SetString(PyExc_ValueError, "delay must be a non-negative number of seconds");
        return NULL;
    }
    TimerObject *t = (TimerObject *)event_new(&TimerType, ctx, handler);
    if (!t)
        return NULL;
    /* round up so that a timer never fires early */
    t->deadline = now_ns() + (int64_t)(delay * 1e9 + 0.999);
    return (PyObject *)timer_insert(ctx, t);
}

static PyObject *Context_add_immediate(ContextObject *ctx, PyObject *handler)
{
    EventObject *e = event_new(&ImmediateType, ctx, handler);
    if (!e)
        return NULL;
    list_insert_before(&ctx->immediates.head, e);
    Py_INCREF(e);
    return (PyObject *)e;
}

static PyObject *Context_add_signal(ContextObject *ctx, PyObject *args)
{
    int signum;
    PyObject *handler;
    if (!PyArg_ParseTuple(args, "iO:add_signal", &signum, &handler))
        return NULL;
    if (signum <= 0 || signum >= NSIG || signum == SIGKILL || signum == SIGSTOP) {
        PyErr_SetString(PyExc_ValueError, "not a catchable signal number");
        return NULL;
    }
    if (sig_pipe_open() < 0)
        return NULL;
    SignalObject *s = (SignalObject *)event_new(&SignalType, ctx, handler);
    if (!s)
        return NULL;
    s->signum = signum;
    s->seen = __atomic_load_n(&sig_counts[signum], __ATOMIC_SEQ_CST);
    if (sig_users[signum]++ == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(signum, &sa, &sig_saved[signum]) < 0) {
            sig_users[signum]--;
            Py_DECREF(s);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    /* the context watches the self-pipe so a signal ends any wait */
    if (list_empty(&ctx->signals) && ctx->backend != B_POLL) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = sig_pipe[0]};
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, sig_pipe[0], &ev) < 0 && errno != EEXIST) {
            sig_users[signum]--;
            Py_DECREF(s);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    ctx->fds_changed = 1;
    list_insert_before(&ctx->signals.head, &s->base);
    Py_INCREF(s);
    return (PyObject *)s;
}

/* ---- running handlers ------------------------------------------------------------------ */

/* Calls handler(event, *extra) keeping the event alive across the call. */
static int call_handler(EventObject *e, PyObject *extra1, PyObject *extra2)
{
    Py_INCREF(e);
    PyObject *handler = Py_NewRef(e->handler);
    PyObject *argv[3] = {(PyObject *)e, extra1, extra2};
    size_t nargs = extra2 ? 3 : extra1 ? 2 : 1;
    PyObject *ret = PyObject_Vectorcall(handler, argv, nargs, NULL);
    Py_DECREF(handler);
    Py_DECREF(e);
    if (!ret)
        return -1;
    Py_DECREF(ret);
    return 0;
}

static int run_immediate(ContextObject *ctx)
{
    EventObject *e = ctx->immediates.head.next;
    Py_INCREF(e);
    event_detach(e);  /* an immediate runs once */
    int rc = call_handler(e, NULL, NULL);
    Py_DECREF(e);
    return rc;
}

static int signal_due(ContextObject *ctx)
{
    for (EventObject *e = ctx->signals.head.next; e != &ctx->signals.head; e = e->next) {
        SignalObject *s = (SignalObject *)e;
        if (__atomic_load_n(&sig_counts[s->signum], __ATOMIC_SEQ_CST) != s->seen)
            return 1;
    }
    return 0;
}

/* 1 if a signal handler ran, 0 if none was pending, -1 on error. */
static int run_signal(ContextObject *ctx)
{
    if (list_empty(&ctx->signals))
        return 0;
    sig_pipe_drain();
    if (!signal_due(ctx))
        return 0;
    for (EventObject *e = ctx->signals.head.next; e != &ctx->signals.head; e = e->next) {
        SignalObject *s = (SignalObject *)e;
        uint64_t now = __atomic_load_n(&sig_counts[s->signum], __ATOMIC_SEQ_CST);
        if (now == s->seen)
            continue;
        long count = (long)(now - s->seen);
        s->seen = now;
        /* rotate for fairness among signal events */
        list_unlink(e);
        list_insert_before(&ctx->signals.head, e);
        PyObject *signum = PyLong_FromLong(s->signum), *n = PyLong_FromLong(count);
        int rc = (signum && n) ? call_handler(e, signum, n) : -1;
        Py_XDECREF(signum);
        Py_XDECREF(n);
        return rc < 0 ? -1 : 1;
    }
    return 0;
}

static int run_timer(ContextObject *ctx)
{
    EventObject *e = ctx->timers.head.next;
    Py_INCREF(e);
    event_detach(e);
    int rc = call_handler(e, NULL, NULL);
    Py_DECREF(e);
    return rc;
}

/* Hands ready = EV_* bits for fd to the first matching fd event in list order (fairness:
 * the list rotates). Returns 1 if a handler ran, 0 if none wanted it. */
static int run_fd(ContextObject *ctx, int fd, int ready, int *handled)
{
    for (EventObject *e = ctx->fds.head.next; e != &ctx->fds.head; e = e->next) {
        FdEventObject *f = (FdEventObject *)e;
        if (f->fd != fd || !(f->flags & ready))
            continue;
        int got = f->flags & ready;
        *handled = got;
        list_unlink(e);
        list_insert_before(&ctx->fds.head, e);
        PyObject *flags = PyLong_FromLong(got);
        if (!flags)
            return -1;
        int rc = call_handler(e, flags, NULL);
        Py_DECREF(flags);
        return rc < 0 ? -1 : 1;
    }
    return 0;
}

static int revents_to_flags(uint32_t ev)
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

/* Dispatches one handler from the ready cache. 1 ran, 0 cache exhausted, -1 error. */
static int run_ready(ContextObject *ctx)
{
    while (ctx->iready < ctx->nready) {
        struct epoll_event *ev = &ctx->ready[ctx->iready];
        if (ev->data.fd == sig_pipe[0]) {
            ctx->iready++;
            continue;
        }
        int handled = 0;
        int rc = run_fd(ctx, ev->data.fd, revents_to_flags(ev->events), &handled);
        if (rc != 0) {
            /* another event on this fd may want the rest of the readiness next time */
            int rest = revents_to_flags(ev->events) & ~handled;
            if (rc > 0 && rest && fd_union(ctx, ev->data.fd) & rest) {
                uint32_t keep = 0;
                if (rest & EV_READ)
                    keep |= EPOLLIN;
                if (rest & EV_WRITE)
                    keep |= EPOLLOUT;
                if (rest & EV_ERROR)
                    keep |= EPOLLRDHUP;
                ev->events = keep;
            } else {
                ctx->iready++;
            }
            return rc;
        }
        ctx->iready++;
    }
    ctx->nready = ctx->iready = 0;
    return 0;
}

/* ---- backend waits ------------------------------------------------------------------------ */

static int timeout_ms(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    int64_t ms = (timeout_ns + 999999) / 1000000;  /* round up: never wake early */
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static int wait_poll(ContextObject *ctx, int64_t timeout_ns)
{
    if (ctx->fds_changed) {
        Py_ssize_t need = ctx->nfds + 1;
        if (need > ctx->cap_pfds) {
            struct pollfd *p = PyMem_Realloc(ctx->pfds, (size_t)need * sizeof(*p));
            if (!p) {
                PyErr_NoMemory();
                return -1;
            }
            ctx->pfds = p;
            ctx->cap_pfds = need;
        }
        Py_ssize_t n = 0;
        for (EventObject *e = ctx->fds.head.next; e != &ctx->fds.head; e = e->next) {
            FdEventObject *f = (FdEventObject *)e;
            short m = 0;
            if (f->flags & EV_READ)
                m |= POLLIN;
            if (f->flags & EV_WRITE)
                m |= POLLOUT;
            if (f->flags & EV_ERROR)
                m |= POLLRDHUP;
            if (!m)
                continue;
            ctx->pfds[n].fd = f->fd;
            ctx->pfds[n].events = m;
            n++;
        }
        if (!list_empty(&ctx->signals)) {
            ctx->pfds[n].fd = sig_pipe[0];
            ctx->pfds[n].events = POLLIN;
            n++;
        }
        ctx->npfds = n;
        ctx->fds_changed = 0;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = poll(ctx->pfds, (nfds_t)ctx->npfds, timeout_ms(timeout_ns));
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return errno == EINTR ? 0 : (PyErr_SetFromErrno(PyExc_OSError), -1);
    /* one handler per step: the first ready event in list order (the list rotates) */
    for (EventObject *e = ctx->fds.head.next; rc > 0 && e != &ctx->fds.head; e = e->next) {
        FdEventObject *f = (FdEventObject *)e;
        for (Py_ssize_t i = 0; i < ctx->npfds; i++) {
            struct pollfd *p = &ctx->pfds[i];
            if (p->fd != f->fd || !p->revents)
                continue;
            uint32_t ev = 0;
            if (p->revents & POLLIN)
                ev |= EPOLLIN;
            if (p->revents & POLLOUT)
                ev |= EPOLLOUT;
            if (p->revents & POLLERR)
                ev |= EPOLLERR;
            if (p->revents & POLLHUP)
                ev |= EPOLLHUP;
            if (p->revents & POLLRDHUP)
                ev |= EPOLLRDHUP;
            if (p->revents & POLLNVAL)
                ev |= EPOLLERR;
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

static int wait_epoll(ContextObject *ctx, int64_t timeout_ns)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = epoll_wait(ctx->epfd, ctx->ready, 1, timeout_ms(timeout_ns));
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return errno == EINTR ? 0 : (PyErr_SetFromErrno(PyExc_OSError), -1);
    ctx->nready = rc;
    ctx->iready = 0;
    return 0;
}

/* The EPOLL_WAIT (or multishot POLL_ADD) completion, handled in C inside the ring's dispatch. */
static int on_wait_cqe(sr_completion *c, int32_t res, uint32_t flags)
{
    ContextObject *ctx = ((typeof(ctx->wait) *)(void *)c)->ctx;
    if (!(flags & IORING_CQE_F_MORE))
        ctx->wait.armed = 0;
    ctx->wait.fired = 1;
    if (ctx->closed)
        return 0;
    if (ctx->wait.multishot) {
        if (res >= 0) {
            int n = epoll_wait(ctx->epfd, ctx->ready, READY_MAX, 0);
            ctx->nready = n > 0 ? n : 0;
            ctx->iready = 0;
        }
    } else if (res > 0) {
        memcpy(ctx->ready, ctx->wait.events, (size_t)res * sizeof(struct epoll_event));
        ctx->nready = res;
        ctx->iready = 0;
    }
    return 0;
}

static int on_cancel_cqe(sr_completion *c, int32_t res, uint32_t flags)
{
    (void)res;
    (void)flags;
    ((typeof(((ContextObject *)0)->cancel) *)(void *)c)->pending = 0;
    return 0;
}

static int arm_wait(ContextObject *ctx)
{
    if (ctx->wait.armed)
        return 0;
    struct io_uring_sqe *sqe = capi->get_sqe(ctx->sr, &ctx->wait.c);
    if (!sqe)
        return -1;
    sqe->fd = ctx->epfd;
    if (ctx->wait.multishot) {
        sqe->opcode = IORING_OP_POLL_ADD;
        sqe->poll32_events = POLLIN;
        sqe->len = IORING_POLL_ADD_MULTI;
    } else {
        sqe->opcode = SR_OP_EPOLL_WAIT;
        sqe->addr = (uint64_t)(uintptr_t)ctx->wait.events;
        sqe->len = READY_MAX;
    }
    ctx->wait.armed = 1;
    return 0;
}

/* Returns 1 if a ring callback ran (that was this step's handler), 0 otherwise, -1 error. */
static int wait_uring(ContextObject *ctx, int64_t timeout_ns)
{
    if (arm_wait(ctx) < 0)
        return -1;
    ctx->wait.fired = 0;
    int ran = capi->wait_and_dispatch(ctx->sr, 1, timeout_ns, 1);
    if (ran < 0) {
        if (PyErr_ExceptionMatches(PyExc_OSError) && errno == EINTR) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    return ran > 0;
}

/* ---- loop_once ---------------------------------------------------------------------------- */

/* One step. Returns 1 if a handler ran, 0 if the wait ended without one, -1 on error. */
static int loop_once(ContextObject *ctx, int64_t max_wait_ns)
{
    if (ctx_check(ctx) < 0)
        return -1;
    /* The usual io_uring step, with nothing in the core to run first and no readiness left
     * over: wait in the ring. The same order as below, without the checks that find nothing;
     * it is what each step of a busy server takes. */
    if (ctx->backend == B_URING && max_wait_ns < 0 && ctx->iready >= ctx->nready &&
        list_empty(&ctx->immediates) && list_empty(&ctx->signals) && list_empty(&ctx->timers)) {
        int rc = wait_uring(ctx, -1);
        if (rc != 0)
            return rc;              /* a ring callback ran: this step's handler */
        if (PyErr_CheckSignals() < 0)
            return -1;
        return run_ready(ctx);      /* the wait reported ready fds */
    }
    if (!list_empty(&ctx->immediates))
        return run_immediate(ctx) < 0 ? -1 : 1;
    int rc = run_signal(ctx);
    if (rc != 0)
        return rc;
    int64_t timeout = -1;
    if (!list_empty(&ctx->timers)) {
        int64_t left = ((TimerObject *)ctx->timers.head.next)->deadline - now_ns();
        if (left <= 0)
            return run_timer(ctx) < 0 ? -1 : 1;
        timeout = left;
    }
    if (max_wait_ns >= 0 && (timeout < 0 || max_wait_ns < timeout))
        timeout = max_wait_ns;
    rc = run_ready(ctx);
    if (rc != 0)
        return rc;
    if (ctx->backend != B_URING && list_empty(&ctx->fds) && list_empty(&ctx->signals) &&
        timeout < 0) {
        PyErr_SetString(PyExc_RuntimeError, "loop_once() would wait forever: no events");
        return -1;
    }
    /* announce the wait, then look once more: a signal before the announcement is seen
     * here, one after it writes to the pipe and ends the wait */
    int watching = !list_empty(&ctx->signals);
    if (watching) {
        __atomic_add_fetch(&sig_waiters, 1, __ATOMIC_SEQ_CST);
        if (signal_due(ctx)) {
            __atomic_sub_fetch(&sig_waiters, 1, __ATOMIC_SEQ_CST);
            return run_signal(ctx);
        }
    }
    if (ctx->backend == B_URING)
        rc = wait_uring(ctx, timeout);
    else
        rc = ctx->backend == B_POLL ? wait_poll(ctx, timeout) : wait_epoll(ctx, timeout);
    if (watching)
        __atomic_sub_fetch(&sig_waiters, 1, __ATOMIC_SEQ_CST);
    if (rc != 0)
        return rc;
    if (PyErr_CheckSignals() < 0)  /* Python's own signal handlers (Ctrl-C) */
        return -1;
    rc = run_signal(ctx);
    if (rc != 0)
        return rc;
    rc = run_ready(ctx);
    if (rc != 0)
        return rc;
    if (!list_empty(&ctx->timers) && ((TimerObject *)ctx->timers.head.next)->deadline <= now_ns())
        return run_timer(ctx) < 0 ? -1 : 1;
    return 0;
}

static PyObject *Context_loop_once(ContextObject *ctx, PyObject *args)
{
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "|O:loop_once", &timeout))
        return NULL;
    int64_t max_wait = -1;
    if (timeout != Py_None) {
        double t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(t >= 0)) {
            PyErr_SetString(PyExc_ValueError, "timeout must be >= 0 or None");
            return NULL;
        }
        max_wait = (int64_t)(t * 1e9);
    }
    int rc = loop_once(ctx, max_wait);
    if (rc < 0)
        return NULL;
    return PyBool_FromLong(rc);
}

/* Runs steps until no events are left (or a handler raises). n > 0 limits the steps. */
static PyObject *Context_loop_wait(ContextObject *ctx, PyObject *args)
{
    Py_ssize_t limit = -1, steps = 0;
    if (!PyArg_ParseTuple(args, "|n:loop_wait", &limit))
        return NULL;
    while (!ctx->closed && (limit < 0 || steps < limit)) {
        if (list_empty(&ctx->fds) && list_empty(&ctx->timers) && list_empty(&ctx->immediates) &&
            list_empty(&ctx->signals) && ctx->nready == 0 &&
            !(ctx->sr && capi->inflight(ctx->sr) > 0))
            break;
        if (loop_once(ctx, -1) < 0)
            return NULL;
        steps++;
    }
    return PyLong_FromSsize_t(steps);
}

/* Cancels a pending EPOLL_WAIT and reaps it: the kernel writes into ctx->wait.events. */
static void uring_release(ContextObject *ctx)
{
    if (!ctx->sr)
        return;
    if (ctx->wait.armed) {
        struct io_uring_sqe *sqe = capi->get_sqe(ctx->sr, &ctx->cancel.c);
        if (sqe) {
            sqe->opcode = IORING_OP_ASYNC_CANCEL;
            sqe->fd = -1;
            sqe->addr = SR_CAPI_USER_DATA(&ctx->wait.c);
            ctx->cancel.pending = 1;
            for (int i = 0; i < 1000 && (ctx->wait.armed || ctx->cancel.pending); i++)
                if (capi->wait_and_dispatch(ctx->sr, 1, 10000000, 0) < 0)
                    PyErr_Clear();
        } else {
            PyErr_Clear();
        }
    }
    ctx->sr = NULL;
    Py_CLEAR(ctx->ring);
}

static void ctx_close(ContextObject *ctx)
{
    if (ctx->closed)
        return;
    List *lists[] = {&ctx->fds, &ctx->timers, &ctx->immediates, &ctx->signals};
    for (size_t i = 0; i < 4; i++)
        while (!list_empty(lists[i]))
            event_detach(lists[i]->head.next);
    uring_release(ctx);
    ctx->closed = 1;
    if (ctx->epfd >= 0)
        close(ctx->epfd);
    ctx->epfd = -1;
    PyMem_Free(ctx->pfds);
    ctx->pfds = NULL;
}

static PyObject *Context_close(ContextObject *ctx, PyObject *unused)
{
    (void)unused;
    ctx_close(ctx);
    Py_RETURN_NONE;
}

static int Context_init(ContextObject *ctx, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"backend", "ring", NULL};
    const char *backend = "epoll";
    PyObject *ring = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|sO:Context", kwlist, &backend, &ring))
        return -1;
    int b = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(backend, backend_names[i]) == 0)
            b = i;
    if (b < 0) {
        PyErr_Format(PyExc_ValueError, "unknown backend %s (poll, epoll, uring)", backend);
        return -1;
    }
    ctx->backend = b;
    if (b != B_POLL) {
        ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (ctx->epfd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    if (b == B_URING) {
        if (!capi) {
            capi = PyCapsule_Import("smbring._uring._C_API", 0);
            if (!capi)
                return -1;
            if (capi->version != SR_RING_API_VERSION) {
                capi = NULL;
                PyErr_SetString(PyExc_ImportError, "smbring._uring C API version mismatch");
                return -1;
            }
        }
        if (ring == Py_None) {
            PyErr_SetString(PyExc_TypeError, "the uring backend needs ring=smbring.uring.Ring(...)");
            return -1;
        }
        ctx->sr = capi->from_object(ring);
        if (!ctx->sr)
            return -1;
        ctx->ring = Py_NewRef(ring);
        ctx->wait.c.handler = on_wait_cqe;
        ctx->wait.ctx = ctx;
        ctx->cancel.c.handler = on_cancel_cqe;
        if (!capi->op_supported(ctx->sr, SR_OP_EPOLL_WAIT)) {
            if (!capi->op_supported(ctx->sr, IORING_OP_POLL_ADD)) {
                PyErr_SetString(PyExc_OSError, "the ring has neither EPOLL_WAIT nor POLL_ADD");
                return -1;
            }
            ctx->wait.multishot = 1;
        }
    }
    return 0;
}

static PyObject *Context_new(PyTypeObject *type, PyObject *a, PyObject *k)
{
    (void)a;
    (void)k;
    ContextObject *ctx = (ContextObject *)type->tp_alloc(type, 0);
    if (!ctx)
        return NULL;
    ctx->epfd = -1;
    list_init(&ctx->fds);
    list_init(&ctx->timers);
    list_init(&ctx->immediates);
    list_init(&ctx->signals);
    ctx->fds_changed = 1;
    return (PyObject *)ctx;
}

static void Context_dealloc(ContextObject *ctx)
{
    PyObject_GC_UnTrack(ctx);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    ctx_close(ctx);
    PyErr_Restore(et, ev, tb);
    Py_TYPE(ctx)->tp_free((PyObject *)ctx);
}

static int Context_traverse(ContextObject *ctx, visitproc visit, void *arg)
{
    Py_VISIT(ctx->ring);
    List *lists[] = {&ctx->fds, &ctx->timers, &ctx->immediates, &ctx->signals};
    for (size_t i = 0; i < 4; i++)
        for (EventObject *e = lists[i]->head.next; e != &lists[i]->head; e = e->next)
            Py_VISIT((PyObject *)e);
    return 0;
}

static int Context_clear(ContextObject *ctx)
{
    ctx_close(ctx);
    return 0;
}

static PyObject *Context_get_backend(ContextObject *ctx, void *c)
{
    (void)c;
    return PyUnicode_FromString(backend_names[ctx->backend]);
}

static PyObject *Context_get_ring(ContextObject *ctx, void *c)
{
    (void)c;
    return Py_NewRef(ctx->ring ? ctx->ring : Py_None);
}

static PyObject *Context_get_closed(ContextObject *ctx, void *c)
{
    (void)c;
    return PyBool_FromLong(ctx->closed);
}

static PyGetSetDef Context_getset[] = {
    {"backend", (getter)Context_get_backend, NULL, "poll, epoll or uring", NULL},
    {"ring", (getter)Context_get_ring, NULL, "the engine ring (uring backend) or None", NULL},
    {"closed", (getter)Context_get_closed, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Context_methods[] = {
    {"add_fd", (PyCFunction)Context_add_fd, METH_VARARGS,
     "add_fd(fd, flags, handler) -> FdEvent; handler(fde, flags)"},
    {"add_timer", (PyCFunction)Context_add_timer, METH_VARARGS,
     "add_timer(delay_seconds, handler) -> Timer; handler(timer), never early"},
    {"add_immediate", (PyCFunction)Context_add_immediate, METH_O,
     "add_immediate(handler) -> Immediate; handler(im) on the next step"},
    {"add_signal", (PyCFunction)Context_add_signal, METH_VARARGS,
     "add_signal(signum, handler) -> Signal; handler(se, signum, count) in loop context"},
    {"loop_once", (PyCFunction)Context_loop_once, METH_VARARGS,
     "loop_once(timeout=None) -> bool\n\nRun one handler (waiting at most timeout seconds)."},
    {"loop_wait", (PyCFunction)Context_loop_wait, METH_VARARGS,
     "loop_wait(max_steps=-1) -> int\n\nRun steps until no events are left."},
    {"close", (PyCFunction)Context_close, METH_NOARGS, "Cancel every event and release the context."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._events.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Context(backend='epoll', ring=None): an event context (see smbring.events)",
    .tp_new = Context_new,
    .tp_init = (initproc)Context_init,
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_traverse = (traverseproc)Context_traverse,
    .tp_clear = (inquiry)Context_clear,
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
};

/* ---- event objects ------------------------------------------------------------------------- */

static int Event_traverse(EventObject *e, visitproc visit, void *arg)
{
    Py_VISIT(e->handler);
    return 0;
}

static int Event_clear(EventObject *e)
{
    Py_CLEAR(e->handler);
    return 0;
}

static void Event_dealloc(EventObject *e)
{
    PyObject_GC_UnTrack(e);
    Py_CLEAR(e->handler);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static PyObject *Event_cancel(EventObject *e, PyObject *unused)
{
    (void)unused;
    if (!e->ctx)
        Py_RETURN_FALSE;
    event_detach(e);
    Py_RETURN_TRUE;
}

static PyObject *Event_get_active(EventObject *e, void *c)
{
    (void)c;
    return PyBool_FromLong(e->ctx != NULL);
}

static PyObject *FdEvent_get_flags(FdEventObject *f, void *c)
{
    (void)c;
    return PyLong_FromLong(f->flags);
}

static int FdEvent_set_flags(FdEventObject *f, PyObject *value, void *c)
{
    (void)c;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "flags cannot be deleted");
        return -1;
    }
    long flags = PyLong_AsLong(value);
    if (flags == -1 && PyErr_Occurred())
        return -1;
    if (flags & ~EV_ALL || flags < 0) {
        PyErr_SetString(PyExc_ValueError, "flags must combine READ, WRITE, ERROR");
        return -1;
    }
    int old = f->flags;
    f->flags = (int)flags;
    if (f->base.ctx && old != flags) {
        ContextObject *ctx = f->base.ctx;
        int others = 0;
        for (EventObject *e = ctx->fds.head.next; e != &ctx->fds.head; e = e->next)
            if (e != &f->base && ((FdEventObject *)e)->fd == f->fd)
                others |= ((FdEventObject *)e)->flags;
        return fd_sync(ctx, f->fd, (others | old) != 0);
    }
    return 0;
}

/* close(): stop the event and close the fd for real. On the uring backend the engine's
 * close_fd cancels ring ops still pending on it first, so the file is really released. */
static PyObject *FdEvent_close(FdEventObject *f, PyObject *unused)
{
    (void)unused;
    ContextObject *ctx = f->base.ctx;
    PyObject *ring = ctx && ctx->ring ? Py_NewRef(ctx->ring) : NULL;
    int fd = f->fd;
    if (ctx) {
        /* every event on this fd stops: the descriptor is about to disappear */
        EventObject *e = ctx->fds.head.next;
        while (e != &ctx->fds.head) {
            EventObject *next = e->next;
            if (((FdEventObject *)e)->fd == fd)
                event_detach(e);
            e = next;
        }
    }
    if (ring) {
        PyObject *r = PyObject_CallMethod(ring, "close_fd", "i", fd);
        Py_DECREF(ring);
        if (!r)
            return NULL;
        Py_DECREF(r);
    } else if (close(fd) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef Event_methods[] = {
    {"cancel", (PyCFunction)Event_cancel, METH_NOARGS, "cancel() -> bool: stop the event"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef FdEvent_methods[] = {
    {"cancel", (PyCFunction)Event_cancel, METH_NOARGS, "cancel() -> bool: stop the event"},
    {"close", (PyCFunction)FdEvent_close, METH_NOARGS,
     "close(): stop every event on the fd and close it (cancelling ring ops on it first)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Event_getset[] = {
    {"active", (getter)Event_get_active, NULL, "not yet cancelled or fired", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef FdEvent_getset[] = {
    {"active", (getter)Event_get_active, NULL, "not cancelled", NULL},
    {"flags", (getter)FdEvent_get_flags, (setter)FdEvent_set_flags,
     "READ | WRITE | ERROR; may be changed while live", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef FdEvent_members[] = {
    {"fd", T_INT, offsetof(FdEventObject, fd), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMemberDef Signal_members[] = {
    {"signum", T_INT, offsetof(SignalObject, signum), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define EVENT_TYPE(var, pyname, ctype, methods, getset, members, docstr)                 \
    static PyTypeObject var = {                                                       \
        PyVarObject_HEAD_INIT(NULL, 0)                                                \
        .tp_name = "smbring._events." pyname,                                         \
        .tp_basicsize = sizeof(ctype),                                                \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,                          \
        .tp_doc = docstr,                                                             \
        .tp_dealloc = (destructor)Event_dealloc,                                      \
        .tp_traverse = (traverseproc)Event_traverse,                                  \
        .tp_clear = (inquiry)Event_clear,                                             \
        .tp_methods = methods,                                                        \
        .tp_getset = getset,                                                          \
        .tp_members = members,                                                        \
    };

EVENT_TYPE(FdEventType, "FdEvent", FdEventObject, FdEvent_methods, FdEvent_getset,
           FdEvent_members, "An fd event: handler(fde, flags) while the fd is ready.")
EVENT_TYPE(TimerType, "Timer", TimerObject, Event_methods, Event_getset, NULL,
           "A one-shot timer: handler(timer).")
EVENT_TYPE(ImmediateType, "Immediate", EventObject, Event_methods, Event_getset, NULL,
           "Runs handler(im) on the next loop step.")
EVENT_TYPE(SignalType, "Signal", SignalObject, Event_methods, Event_getset, Signal_members,
           "A signal event: handler(se, signum, count) in loop context.")

/* ---- module --------------------------------------------------------------------------------- */

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "smbring._events", "tevent-style event loop core (see smbring.events)",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__events(void)
{
    PyTypeObject *types[] = {&ContextType, &FdEventType, &TimerType, &ImmediateType, &SignalType};
    for (size_t i = 0; i < 5; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    const char *names[] = {"Context", "FdEvent", "Timer", "Immediate", "Signal"};
    for (size_t i = 0; i < 5; i++)
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0)
            goto fail;
    if (PyModule_AddIntConstant(m, "READ", EV_READ) < 0 ||
        PyModule_AddIntConstant(m, "WRITE", EV_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "ERROR", EV_ERROR) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
