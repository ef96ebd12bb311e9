/*
 * The Ring type: what Python sees of a ring. Setting up, tearing down and the queues are
 * setup.c's and queue.c's, completions dispatch.c's; the op and registration methods come
 * from ops.c and register.c and are gathered into this type's method table.
 */
#include "dispatch.h"
#include "ops.h"
#include "register.h"
#include "ring_object.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
    unsigned flags = 0;
    if (flags_obj != Py_None) {
        flags = PyLong_AsUnsignedLong(flags_obj);
        if (PyErr_Occurred())
            return -1;
    }
    return ring_setup(r, entries, cq_entries, flags_obj != Py_None ? &flags : NULL, sqpoll);
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

/* ---- closing ---------------------------------------------------------------------------- */

static void teardown(RingObject *r, Py_ssize_t abandoned)
{
    register_release_all(r, abandoned > 0);
    ring_destroy(r);
}

static PyObject *Ring_close(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (r->fd < 0)
        Py_RETURN_NONE;
    int rc = 0;
    if (ring_owned_here(r))
        rc = ring_drain(r, 0);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    teardown(r, requests_abandon(r));
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
        if (ring_owned_here(r))
            ring_drain(r, 1);
        teardown(r, requests_abandon(r));
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
 * neither end them nor shut a socket down (a problem Samba's developers met with io_uring under tevent). */
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
        if (requests_on_fd(r, fd) == 0)
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

RING_INT_GETTER(personality, r->personality)

/* The personality (an id from register_personality(), 0 for none) that the ops prepared from
 * now on carry in their SQE: the kernel runs each with the credentials registered under it. */
static int Ring_set_personality(RingObject *r, PyObject *value, void *c)
{
    (void)c;
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "personality cannot be deleted (set 0)");
        return -1;
    }
    long id = PyLong_AsLong(value);
    if (id == -1 && PyErr_Occurred())
        return -1;
    if (id < 0 || id > UINT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "personality must be 0 or an id from register_personality()");
        return -1;
    }
    r->personality = (uint16_t)id;
    return 0;
}

static PyGetSetDef Ring_getset[] = {
    {"personality", (getter)Ring_get_personality, (setter)Ring_set_personality,
     "the registered personality stamped on every op prepared from now on (0: the submitting "
     "thread's own credentials)", NULL},
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
