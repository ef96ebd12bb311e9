/*
 * Events: the objects add_fd(), add_timer(), add_immediate() and add_signal() return, their
 * place in the context's lists, and their Python types. An event holds its handler; the
 * context holds one reference to each live event, dropped when it is cancelled or fired.
 */
#include "events.h"

#include <string.h>
#include <structmember.h>
#include <unistd.h>

EventObject *event_new(PyTypeObject *type, ContextObject *ctx, PyObject *handler)
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
void event_detach(EventObject *e)
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
        signal_unwatch(((SignalObject *)e)->signum);
    }
    Py_DECREF(e);
}

/* Union of the flags of all live fd events on fd. */
int fd_union(ContextObject *ctx, int fd)
{
    int u = 0;
    for (EventObject *e = ctx->fds.head.next; e != &ctx->fds.head; e = e->next) {
        FdEventObject *f = (FdEventObject *)e;
        if (f->fd == fd)
            u |= f->flags;
    }
    return u;
}

/* After any change to the events on fd: the backend tells the kernel what the fd is now
 * wanted for, and readiness cached from the last wait is dropped (it may no longer match). */
int fd_sync(ContextObject *ctx, int fd, int was_registered)
{
    ctx->nready = ctx->iready = 0;
    return ctx->backend->fd_changed(ctx, fd, was_registered);
}

/* ---- Python types ---------------------------------------------------------------------------- */

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
    PyTypeObject var = {                                                              \
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
