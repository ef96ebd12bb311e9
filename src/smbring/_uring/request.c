/*
 * Request: one submitted operation. It owns what the kernel touches (pinned buffers, scratch
 * memory, path objects) and releases the buffers only at its last completion: for multishot
 * ops the CQE without IORING_CQE_F_MORE, for zero-copy sends the notification.
 */
#include "request.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>

#define request_of(l) ((RequestObject *)((char *)(l) - offsetof(RequestObject, link)))

/* What every new request checks: a usable ring, an op the kernel has, a callable or None. */
static int check_new(RingObject *r, uint8_t opcode, PyObject **callback)
{
    if (ring_check_usable(r) < 0)
        return -1;
    if (!ring_op_supported(r, opcode)) {
        PyErr_Format(UnsupportedOp, "IORING_OP_%s is not supported by this kernel",
                     sr_op_name(opcode));
        return -1;
    }
    if (*callback == Py_None)
        *callback = NULL;
    if (*callback && !PyCallable_Check(*callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable or None");
        return -1;
    }
    return 0;
}

/* Requests are made and dropped at the rate of I/O: a few freed ones are kept for reuse
 * (as CPython keeps tuples and lists), which saves an allocation and its GC bookkeeping per op.
 * Only under the GIL, like every other entry point. */
#define FREELIST_MAX 64
static RequestObject *freelist[FREELIST_MAX];
static int nfree;

RequestObject *request_new(RingObject *r, uint8_t opcode, PyObject *callback)
{
    if (check_new(r, opcode, &callback) < 0)
        return NULL;
    RequestObject *req;
    if (nfree > 0) {
        req = freelist[--nfree];
        PyObject_Init((PyObject *)req, &RequestType);
    } else {
        req = PyObject_GC_New(RequestObject, &RequestType);
        if (!req)
            return NULL;
    }
    req->link.prev = req->link.next = NULL;
    req->ring = NULL;
    req->callback = Py_XNewRef(callback);
    req->keep = NULL;
    req->value = NULL;
    req->views = NULL;
    req->nviews = 0;
    req->mem = NULL;
    req->res = 0;
    req->flags = 0;
    req->fd = -1;
    req->opcode = opcode;
    req->state = REQ_NEW;
    req->notif_pending = 0;
    req->zc_copied = 0;
    req->uses_fixed_buffer = 0;
    req->is_batch = 0;
    req->selects_buffer = 0;
    req->buf_group = 0;
    req->finish = NULL;
    /* Only a callback can lead back to the request (a closure that holds it); what else a
     * request refers to (pinned buffers, paths, results) cannot, so the collector need not
     * watch the rest, which are most requests of a busy server. */
    if (callback)
        PyObject_GC_Track(req);
    return req;
}

/* Room for n more pinned buffers. */
int request_reserve_views(RequestObject *req, int n)
{
    if (!req->views && n == 1) {
        req->views = &req->one_view;
        return 0;
    }
    Py_buffer *old = req->views == &req->one_view ? NULL : req->views;
    Py_buffer *v = PyMem_Realloc(old, (size_t)(req->nviews + n) * sizeof(Py_buffer));
    if (!v) {
        PyErr_NoMemory();
        return -1;
    }
    if (req->views == &req->one_view && req->nviews)
        v[0] = req->one_view;
    req->views = v;
    return 0;
}

static void free_views(RequestObject *req)
{
    if (req->views && req->views != &req->one_view)
        PyMem_Free(req->views);
    req->views = NULL;
}

/* Pins obj's buffer for the kernel. While pinned, a bytearray cannot be resized and no
 * object can be freed: its export is held until request_release. */
int request_pin(RequestObject *req, PyObject *obj, int writable, Py_buffer **out)
{
    if (!req->views)
        req->views = &req->one_view;    /* the usual single buffer */
    else if (request_reserve_views(req, 1) < 0)
        return -1;
    Py_buffer *view = &req->views[req->nviews];
    if (!writable && PyBytes_CheckExact(obj)) {
        /* what bytes' own getbuffer fills in, without the generic protocol's cost per op */
        memset(view, 0, sizeof(*view));
        view->obj = Py_NewRef(obj);
        view->buf = PyBytes_AS_STRING(obj);
        view->len = PyBytes_GET_SIZE(obj);
        view->readonly = 1;
        view->itemsize = 1;
        view->ndim = 1;
        req->nviews++;
        if (out)
            *out = view;
        return 0;
    }
    int flags = writable ? PyBUF_WRITABLE : PyBUF_SIMPLE;
    if (PyObject_GetBuffer(obj, view, flags | PyBUF_C_CONTIGUOUS) < 0) {
        if (writable && PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "a writable contiguous buffer is required, not %.200s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    req->nviews++;
    if (out)
        *out = view;
    return 0;
}

/* Zeroed scratch memory that lives as long as the request object (results like msg_flags
 * are read from it after completion). */
void *request_alloc(RequestObject *req, size_t size)
{
    if (req->mem) {
        PyErr_SetString(PyExc_SystemError, "request scratch allocated twice");
        return NULL;
    }
    req->mem = PyMem_Calloc(1, size);
    if (!req->mem)
        PyErr_NoMemory();
    return req->mem;
}

static void request_release(RequestObject *req)
{
    for (int i = 0; i < req->nviews; i++) {
        Py_buffer *view = &req->views[i];
        if (view->obj && Py_IS_TYPE(view->obj, &PyBytes_Type))
            Py_CLEAR(view->obj);    /* what PyBuffer_Release does for bytes, without the call */
        else
            PyBuffer_Release(view);
    }
    req->nviews = 0;
    free_views(req);
    Py_CLEAR(req->keep);
}

/* Takes a slot for req's SQE, links req in flight and gives the ring its reference.
 * Everything that can fail must be done before this. */
struct io_uring_sqe *request_queue(RequestObject *req, RingObject *r, int fd, int sqe_flags)
{
    if (sqe_flags & ~SR_USER_SQE_FLAGS) {
        PyErr_SetString(PyExc_ValueError, "sqe_flags may only combine FIXED_FILE, DRAIN, LINK, "
                                          "HARDLINK and ASYNC");
        return NULL;
    }
    struct io_uring_sqe *sqe = ring_next_sqe(r);
    if (!sqe)
        return NULL;
    sqe->opcode = req->opcode;
    sqe->fd = fd;
    sqe->flags = (uint8_t)sqe_flags;
    sqe->user_data = (uint64_t)(uintptr_t)req | SR_TAG_REQUEST;
    sqe->personality = r->personality;
    request_start(req, r, fd, sqe_flags);
    return sqe;
}

/* req is in flight from now on: the ring holds a reference until its last completion. */
void request_start(RequestObject *req, RingObject *r, int fd, int sqe_flags)
{
    req->ring = r;
    req->fd = (sqe_flags & IOSQE_FIXED_FILE) ? -1 : fd;
    req->state = REQ_INFLIGHT;
    req->link.prev = r->inflight.prev;
    req->link.next = &r->inflight;
    r->inflight.prev->next = &req->link;
    r->inflight.prev = &req->link;
    r->ninflight++;
    if (req->uses_fixed_buffer)
        r->fixed_inflight++;
    Py_INCREF(req);
}

int request_complete(RequestObject *req, int32_t res, uint32_t flags, int silent)
{
    RingObject *r = req->ring;
    int final;
    if (flags & IORING_CQE_F_NOTIF) {
        /* zero-copy notification: the kernel no longer reads the buffer */
        req->notif_pending = 0;
        req->zc_copied = (res & IORING_NOTIF_USAGE_ZC_COPIED) ? 1 : 0;
        req->flags = flags;
        final = 1;
    } else {
        req->res = res;
        req->flags = flags;
        if ((flags & IORING_CQE_F_MORE) && (req->opcode == IORING_OP_SEND_ZC ||
                                            req->opcode == IORING_OP_SENDMSG_ZC))
            req->notif_pending = 1;
        final = !(flags & IORING_CQE_F_MORE);
    }
    if (final) {
        req->state = REQ_DONE;
        req->link.prev->next = req->link.next;
        req->link.next->prev = req->link.prev;
        req->link.prev = req->link.next = NULL;
        r->ninflight--;
        if (req->uses_fixed_buffer)
            r->fixed_inflight--;
        if (req->finish && req->finish(req) < 0)
            PyErr_Clear();  /* a result we could not build shows as value None */
        request_release(req);
        req->ring = NULL;
    }
    int rc = 0;
    if (req->callback && !silent) {
        PyObject *ret = PyObject_CallOneArg(req->callback, (PyObject *)req);
        if (ret)
            Py_DECREF(ret);
        else
            rc = -1;
    }
    if (final)
        Py_DECREF(req);  /* the ring's reference */
    return rc;
}

/* ---- Python side ---------------------------------------------------------------------- */

static int Request_traverse(RequestObject *req, visitproc visit, void *arg)
{
    Py_VISIT(req->callback);
    Py_VISIT(req->keep);
    Py_VISIT(req->value);
    return 0;
}

static int Request_clear(RequestObject *req)
{
    /* never called while in flight: the ring's reference keeps the request reachable */
    Py_CLEAR(req->callback);
    Py_CLEAR(req->value);
    if (req->state != REQ_INFLIGHT)
        request_release(req);
    return 0;
}

static void Request_dealloc(RequestObject *req)
{
    PyObject_GC_UnTrack(req);
    Request_clear(req);
    if (req->is_batch)
        PyMem_Free(((BatchObject *)req)->items);
    if (req->mem) {
        PyMem_Free(req->mem);
        req->mem = NULL;
    }
    free_views(req);
    if (Py_TYPE(req) == &RequestType && nfree < FREELIST_MAX) {
        freelist[nfree++] = req;
        return;
    }
    Py_TYPE(req)->tp_free((PyObject *)req);
}

static PyObject *Request_cancel(RequestObject *req, PyObject *unused)
{
    (void)unused;
    if (req->state != REQ_INFLIGHT)
        Py_RETURN_FALSE;
    RingObject *r = req->ring;
    if (!r)
        Py_RETURN_FALSE;  /* its ring was closed under it */
    if (ring_check_usable(r) < 0)
        return NULL;
    struct io_uring_sqe *sqe = ring_next_sqe(r);
    if (!sqe)
        return NULL;
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = (uint64_t)(uintptr_t)req;
    sqe->user_data = 0;
    Py_RETURN_TRUE;
}

static PyObject *Request_result(RequestObject *req, PyObject *unused)
{
    (void)unused;
    if (req->state != REQ_DONE && !(req->flags & IORING_CQE_F_MORE) && !req->notif_pending) {
        PyErr_SetString(PyExc_RuntimeError, "request has not completed");
        return NULL;
    }
    if (req->res < 0)
        return sr_oserror(-req->res, NULL);
    if (req->value)
        return Py_NewRef(req->value);
    return PyLong_FromLong(req->res);
}

static PyObject *Request_repr(RequestObject *req)
{
    static const char *states[] = {"new", "in flight", "done"};
    const char *name = sr_op_name(req->opcode);
    return PyUnicode_FromFormat("<Request %s %s res=%d>", name, states[req->state], (int)req->res);
}

#define REQ_GETTER(name, expr) \
    static PyObject *Request_get_##name(RequestObject *req, void *c) { (void)c; return expr; }
REQ_GETTER(res, PyLong_FromLong(req->res))
REQ_GETTER(flags, PyLong_FromUnsignedLong(req->flags))
REQ_GETTER(done, PyBool_FromLong(req->state == REQ_DONE))
REQ_GETTER(more, PyBool_FromLong((req->flags & IORING_CQE_F_MORE) != 0))
REQ_GETTER(notif, PyBool_FromLong((req->flags & IORING_CQE_F_NOTIF) != 0))
REQ_GETTER(zc_copied, PyBool_FromLong(req->zc_copied))
REQ_GETTER(buffer_id, (req->flags & IORING_CQE_F_BUFFER)
                          ? PyLong_FromUnsignedLong(req->flags >> IORING_CQE_BUFFER_SHIFT)
                          : Py_NewRef(Py_None))
REQ_GETTER(op, PyUnicode_FromString(sr_op_name(req->opcode)))
REQ_GETTER(value, Py_NewRef(req->value ? req->value : Py_None))

static PyGetSetDef Request_getset[] = {
    {"res", (getter)Request_get_res, NULL, "the CQE result: bytes, fd, 0, or -errno", NULL},
    {"flags", (getter)Request_get_flags, NULL, "the CQE flags (IORING_CQE_F_*)", NULL},
    {"done", (getter)Request_get_done, NULL, "the last completion has arrived", NULL},
    {"more", (getter)Request_get_more, NULL, "more completions follow for this request", NULL},
    {"notif", (getter)Request_get_notif, NULL, "this completion is a zero-copy notification", NULL},
    {"zc_copied", (getter)Request_get_zc_copied, NULL,
     "zero-copy send: the kernel copied the data after all", NULL},
    {"buffer_id", (getter)Request_get_buffer_id, NULL,
     "provided-buffer id chosen by the kernel, or None", NULL},
    {"op", (getter)Request_get_op, NULL, "the op name", NULL},
    {"value", (getter)Request_get_value, NULL,
     "op-specific result (statx: Statx; epoll_wait: [(fd, events)]; recvmsg: msg_flags)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Request_methods[] = {
    {"cancel", (PyCFunction)Request_cancel, METH_NOARGS,
     "cancel() -> bool\n\nAsk the kernel to cancel this request (its callback still runs, "
     "usually with -ECANCELED). False if it already completed."},
    {"result", (PyCFunction)Request_result, METH_NOARGS,
     "result()\n\nThe result, or OSError for a negative res."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._uring.Request",
    .tp_basicsize = sizeof(RequestObject),
    .tp_dealloc = (destructor)Request_dealloc,
    .tp_repr = (reprfunc)Request_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One submitted io_uring operation. Its callback receives it at each completion.",
    .tp_traverse = (traverseproc)Request_traverse,
    .tp_clear = (inquiry)Request_clear,
    .tp_methods = Request_methods,
    .tp_getset = Request_getset,
};

/* ---- Batch ------------------------------------------------------------------------------ */

static PyObject *Batch_get_results(BatchObject *b, void *c)
{
    (void)c;
    PyObject *list = PyList_New(b->count);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < b->count; i++) {
        PyObject *v = PyLong_FromLong(b->items[i].res);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

/* The smallest item result: one comparison tells a caller that every read or write was full
 * (min_result == size) without building the list of results. */
static PyObject *Batch_get_min_result(BatchObject *b, void *c)
{
    (void)c;
    long lowest = 0;
    for (Py_ssize_t i = 0; i < b->count; i++)
        if (i == 0 || b->items[i].res < lowest)
            lowest = b->items[i].res;
    return PyLong_FromLong(lowest);
}

static PyGetSetDef Batch_getset[] = {
    {"results", (getter)Batch_get_results, NULL, "per-item results (bytes or -errno)", NULL},
    {"min_result", (getter)Batch_get_min_result, NULL,
     "the smallest per-item result (0 for an empty batch): == size when every item was full", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Batch_members[] = {
    {"count", T_PYSSIZET, offsetof(BatchObject, count), READONLY, "items in the batch"},
    {"remaining", T_PYSSIZET, offsetof(BatchObject, remaining), READONLY, "items not yet completed"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._uring.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Many SQEs of one kind submitted by one call; its callback runs once, when all are done.",
    .tp_getset = Batch_getset,
    .tp_members = Batch_members,
};

BatchObject *batch_new(RingObject *r, uint8_t opcode, PyObject *callback, Py_ssize_t count)
{
    if (check_new(r, opcode, &callback) < 0)
        return NULL;
    BatchObject *b = PyObject_GC_New(BatchObject, &BatchType);
    if (!b)
        return NULL;
    RequestObject *req = &b->base;
    memset((char *)b + sizeof(PyObject), 0, sizeof(BatchObject) - sizeof(PyObject));
    req->callback = Py_XNewRef(callback);
    req->fd = -1;
    req->opcode = opcode;
    req->is_batch = 1;
    b->count = b->remaining = count;
    b->items = PyMem_Calloc((size_t)(count ? count : 1), sizeof(BatchItem));
    PyObject_GC_Track(b);
    if (!b->items) {
        Py_DECREF(b);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        b->items[i].batch = b;
    return b;
}

/* ---- the ring's requests in flight -------------------------------------------------------- */

Py_ssize_t requests_on_fd(RingObject *r, int fd)
{
    Py_ssize_t n = 0;
    for (InflightLink *l = r->inflight.next; l != &r->inflight; l = l->next)
        n += request_of(l)->fd == fd;
    return n;
}

/* At close, for requests the kernel did not finish: forget them without touching their
 * buffers (leaked on purpose: their memory stays valid, which a use-after-free would not).
 * Returns how many were forgotten. */
Py_ssize_t requests_abandon(RingObject *r)
{
    Py_ssize_t abandoned = r->ninflight;
    if (r->ninflight > 0 && r->fork_generation == sr_fork_generation) {
        PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                         "Ring closed with %zd request(s) the kernel did not finish; "
                         "their buffers are leaked rather than freed under the kernel",
                         r->ninflight);
        PyErr_Clear();
    }
    for (InflightLink *l = r->inflight.next; l != &r->inflight; l = l->next)
        request_of(l)->ring = NULL;
    r->inflight.next = r->inflight.prev = &r->inflight;
    r->ninflight = 0;
    return abandoned;
}

int request_types_ready(void)
{
    /* a Batch is a Request with items: same lifetime handling, no freelist (see dealloc) */
    BatchType.tp_base = &RequestType;
    BatchType.tp_traverse = RequestType.tp_traverse;
    BatchType.tp_clear = RequestType.tp_clear;
    BatchType.tp_dealloc = RequestType.tp_dealloc;
    return PyType_Ready(&RequestType) < 0 || PyType_Ready(&BatchType) < 0 ? -1 : 0;
}
