/*
 * One step of the loop: loop_once() runs exactly one handler. An immediate, else a signal,
 * else an expired timer, all decided here; only when none is ready does the backend wait,
 * with the next timer as the timeout. The fds a wait found ready are handed out one per
 * step, in list order, and the event that ran moves to the end of the list (fairness).
 */
#include "events.h"

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
        if (signal_count(s->signum) != s->seen)
            return 1;
    }
    return 0;
}

/* 1 if a signal handler ran, 0 if none was pending, -1 on error. */
static int run_signal(ContextObject *ctx)
{
    if (list_empty(&ctx->signals))
        return 0;
    signal_pipe_drain();
    if (!signal_due(ctx))
        return 0;
    for (EventObject *e = ctx->signals.head.next; e != &ctx->signals.head; e = e->next) {
        SignalObject *s = (SignalObject *)e;
        uint64_t now = signal_count(s->signum);
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

/* Dispatches one handler from the ready cache. 1 ran, 0 cache exhausted, -1 error. */
static int run_ready(ContextObject *ctx)
{
    while (ctx->iready < ctx->nready) {
        struct epoll_event *ev = &ctx->ready[ctx->iready];
        if (ev->data.fd == signal_pipe_fd()) {
            ctx->iready++;
            continue;
        }
        int handled = 0;
        int rc = run_fd(ctx, ev->data.fd, revents_to_flags(ev->events), &handled);
        if (rc != 0) {
            /* another event on this fd may want the rest of the readiness next time */
            int rest = revents_to_flags(ev->events) & ~handled;
            if (rc > 0 && rest && fd_union(ctx, ev->data.fd) & rest) {
                ev->events = flags_to_epoll(rest);
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

/* One step. Returns 1 if a handler ran, 0 if the wait ended without one, -1 on error. */
int loop_once(ContextObject *ctx, int64_t max_wait_ns)
{
    if (ctx_check(ctx) < 0)
        return -1;
    const struct event_backend *backend = ctx->backend;
    /* The usual step of a busy server: nothing in the core to run first, no readiness left
     * over, no timeout: just wait. The same order as below, without the checks that would
     * find nothing. */
    if (max_wait_ns < 0 && ctx->iready >= ctx->nready && list_empty(&ctx->immediates) &&
        list_empty(&ctx->signals) && list_empty(&ctx->timers) &&
        (backend->waits_without_events || !list_empty(&ctx->fds))) {
        int rc = backend->wait(ctx, -1);
        if (rc != 0)
            return rc;              /* a handler ran inside the wait (a ring callback) */
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
    if (!backend->waits_without_events && list_empty(&ctx->fds) && list_empty(&ctx->signals) &&
        timeout < 0) {
        PyErr_SetString(PyExc_RuntimeError, "loop_once() would wait forever: no events");
        return -1;
    }
    /* announce the wait, then look once more: a signal before the announcement is seen
     * here, one after it writes to the pipe and ends the wait */
    int watching = !list_empty(&ctx->signals);
    if (watching) {
        signal_wait_begin();
        if (signal_due(ctx)) {
            signal_wait_end();
            return run_signal(ctx);
        }
    }
    rc = backend->wait(ctx, timeout);
    if (watching)
        signal_wait_end();
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
