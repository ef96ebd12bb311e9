/*
 * The event context: the Context type, adding events to it, running the loop from Python,
 * and closing it. Which backend waits is chosen here, by name, and reached only through its
 * struct event_backend.
 */
#include "events.h"

#include <signal.h>
#include <string.h>

static const struct event_backend *const backends[] = {&poll_backend, &epoll_backend, &uring_backend};

/* ---- adding events ---------------------------------------------------------------------- */

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
    if (signal_pipe_open() < 0)
        return NULL;
    SignalObject *s = (SignalObject *)event_new(&SignalType, ctx, handler);
    if (!s)
        return NULL;
    s->signum = signum;
    s->seen = signal_count(signum);
    if (signal_watch(signum) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    /* the context's waits end on the self-pipe from its first signal event on */
    if (list_empty(&ctx->signals) && ctx->backend->watch_signal_pipe(ctx, signal_pipe_fd()) < 0) {
        signal_unwatch(signum);
        Py_DECREF(s);
        return NULL;
    }
    list_insert_before(&ctx->signals.head, &s->base);
    Py_INCREF(s);
    return (PyObject *)s;
}

/* ---- running ---------------------------------------------------------------------------- */

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
            !(ctx->backend->has_pending_work && ctx->backend->has_pending_work(ctx)))
            break;
        if (loop_once(ctx, -1) < 0)
            return NULL;
        steps++;
    }
    return PyLong_FromSsize_t(steps);
}

/* ---- the context itself ------------------------------------------------------------------ */

/* Every event goes (the context's references with them), then the backend's own state. */
static void ctx_close(ContextObject *ctx)
{
    if (ctx->closed)
        return;
    List *lists[] = {&ctx->fds, &ctx->timers, &ctx->immediates, &ctx->signals};
    for (size_t i = 0; i < 4; i++)
        while (!list_empty(lists[i]))
            event_detach(lists[i]->head.next);
    ctx->backend->release(ctx);
    Py_CLEAR(ctx->ring);
    ctx->closed = 1;
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
    const char *name = "epoll";
    PyObject *ring = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|sO:Context", kwlist, &name, &ring))
        return -1;
    if (ctx->backend_state || ctx->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Context.__init__ called twice");
        return -1;
    }
    const struct event_backend *backend = NULL;
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(name, backends[i]->name) == 0)
            backend = backends[i];
    if (!backend) {
        PyErr_Format(PyExc_ValueError, "unknown backend %s (poll, epoll, uring)", name);
        return -1;
    }
    ctx->backend = backend;
    if (backend->init(ctx, ring) < 0) {
        /* what init made is released now; the object stays, closed */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        ctx_close(ctx);
        PyErr_Restore(et, ev, tb);
        return -1;
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
    ctx->backend = &poll_backend;  /* a Context whose __init__ never ran polls */
    list_init(&ctx->fds);
    list_init(&ctx->timers);
    list_init(&ctx->immediates);
    list_init(&ctx->signals);
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
    return PyUnicode_FromString(ctx->backend->name);
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

PyTypeObject ContextType = {
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
