/*
 * Registered resources: fixed buffers (pinned once, no page pinning per request), the fixed
 * file table, and provided buffer rings for multishot receives.
 */
#include "register.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>
#include <sys/mman.h>
#include <sys/uio.h>

static PyObject *memlock_error(int err, const char *what)
{
    if (err == ENOMEM || err == EPERM)
        return PyErr_Format(PyExc_OSError,
                            "%s failed (%s): registered memory counts against the locked-memory "
                            "limit (ulimit -l, 8 MiB for ordinary users); raise it or register less",
                            what, strerror(err));
    return sr_oserror(err, what);
}

static PyObject *Ring_register_buffers(RingObject *r, PyObject *arg)
{
    if (ring_check_usable(r) < 0)
        return NULL;
    if (r->nregistered) {
        PyErr_SetString(PyExc_RuntimeError, "buffers already registered; unregister first");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(arg, "register_buffers() takes a sequence of buffers");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1 || n > 16384) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "between 1 and 16384 buffers can be registered");
        return NULL;
    }
    Py_buffer *views = PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    struct iovec *iov = PyMem_Calloc((size_t)n, sizeof(struct iovec));
    Py_ssize_t pinned = 0;
    if (!views || !iov) {
        PyErr_NoMemory();
        goto fail;
    }
    for (; pinned < n; pinned++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, pinned), &views[pinned],
                               PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            goto fail;
        if (views[pinned].len == 0 || (size_t)views[pinned].len > (1u << 30)) {
            pinned++;
            PyErr_SetString(PyExc_ValueError, "a registered buffer must be 1 byte to 1 GiB");
            goto fail;
        }
        iov[pinned].iov_base = views[pinned].buf;
        iov[pinned].iov_len = (size_t)views[pinned].len;
    }
    if (ring_register(r, IORING_REGISTER_BUFFERS, iov, (unsigned)n) < 0) {
        memlock_error(errno, "IORING_REGISTER_BUFFERS");
        goto fail;
    }
    PyMem_Free(iov);
    Py_DECREF(fast);
    r->registered = views;
    r->nregistered = (int)n;
    Py_RETURN_NONE;
fail:
    for (Py_ssize_t i = 0; i < pinned; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
    Py_DECREF(fast);
    return NULL;
}

/* Unpins the registered buffers (the kernel has let go of them, or is about to). */
static void release_registered(RingObject *r)
{
    for (int i = 0; i < r->nregistered; i++)
        PyBuffer_Release(&r->registered[i]);
    PyMem_Free(r->registered);
    r->registered = NULL;
    r->nregistered = 0;
}

static PyObject *Ring_unregister_buffers(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (ring_check_usable(r) < 0)
        return NULL;
    if (r->fixed_inflight) {
        PyErr_SetString(PyExc_RuntimeError, "registered buffers are in use by requests in flight");
        return NULL;
    }
    if (!r->nregistered)
        Py_RETURN_NONE;
    if (ring_register(r, IORING_UNREGISTER_BUFFERS, NULL, 0) < 0)
        return sr_oserror(errno, "IORING_UNREGISTER_BUFFERS");
    release_registered(r);
    Py_RETURN_NONE;
}

static int *fd_array(PyObject *seq, Py_ssize_t *n)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of file descriptors");
    if (!fast)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    int *fds = PyMem_Malloc((size_t)(*n ? *n : 1) * sizeof(int));
    if (!fds) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        fds[i] = sr_as_int(PySequence_Fast_GET_ITEM(fast, i));
        if (fds[i] == -1 && PyErr_Occurred()) {
            PyMem_Free(fds);
            Py_DECREF(fast);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return fds;
}

/* register_files(fds) or register_files(count) for an empty (sparse) table. Ops then take
 * the table index as fd together with sqe_flags=FIXED_FILE. */
static PyObject *Ring_register_files(RingObject *r, PyObject *arg)
{
    if (ring_check_usable(r) < 0)
        return NULL;
    if (r->nfiles) {
        PyErr_SetString(PyExc_RuntimeError, "files already registered; unregister first");
        return NULL;
    }
    struct io_uring_rsrc_register reg;
    memset(&reg, 0, sizeof(reg));
    int *fds = NULL;
    Py_ssize_t n;
    if (PyLong_Check(arg)) {
        n = PyLong_AsSsize_t(arg);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        reg.flags = IORING_RSRC_REGISTER_SPARSE;
    } else {
        fds = fd_array(arg, &n);
        if (!fds)
            return NULL;
        reg.data = (uint64_t)(uintptr_t)fds;
    }
    if (n < 1 || n > 65536) {
        PyMem_Free(fds);
        PyErr_SetString(PyExc_ValueError, "between 1 and 65536 file slots");
        return NULL;
    }
    reg.nr = (uint32_t)n;
    int rc = ring_register(r, IORING_REGISTER_FILES2, &reg, sizeof(reg));
    int err = errno;
    PyMem_Free(fds);
    if (rc < 0)
        return sr_oserror(err, "IORING_REGISTER_FILES2");
    r->nfiles = (int)n;
    Py_RETURN_NONE;
}

static PyObject *Ring_update_files(RingObject *r, PyObject *args)
{
    unsigned offset;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "IO:update_files", &offset, &seq))
        return NULL;
    if (ring_check_usable(r) < 0)
        return NULL;
    Py_ssize_t n;
    int *fds = fd_array(seq, &n);
    if (!fds)
        return NULL;
    if ((Py_ssize_t)offset + n > r->nfiles) {
        PyMem_Free(fds);
        PyErr_SetString(PyExc_ValueError, "update beyond the registered file table");
        return NULL;
    }
    struct io_uring_rsrc_update2 up;
    memset(&up, 0, sizeof(up));
    up.offset = offset;
    up.data = (uint64_t)(uintptr_t)fds;
    up.nr = (uint32_t)n;
    int rc = ring_register(r, IORING_REGISTER_FILES_UPDATE2, &up, sizeof(up));
    int err = errno;
    PyMem_Free(fds);
    if (rc < 0)
        return sr_oserror(err, "IORING_REGISTER_FILES_UPDATE2");
    return PyLong_FromLong(rc);
}

static PyObject *Ring_unregister_files(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (ring_check_usable(r) < 0)
        return NULL;
    if (r->nfiles && ring_register(r, IORING_UNREGISTER_FILES, NULL, 0) < 0)
        return sr_oserror(errno, "IORING_UNREGISTER_FILES");
    r->nfiles = 0;
    Py_RETURN_NONE;
}

/* ---- provided buffer rings ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    RingObject *ring;        /* borrowed: the ring's buf_rings dict keeps us alive */
    struct io_uring_buf_ring *br;
    size_t ring_bytes;
    char *data;
    size_t data_bytes;
    unsigned entries, size, mask;
    uint16_t bgid;
    uint16_t tail;
    int registered;
} BufRingObject;

static void bufring_add(BufRingObject *b, unsigned bid)
{
    struct io_uring_buf *buf = &b->br->bufs[b->tail & b->mask];
    buf->addr = (uint64_t)(uintptr_t)(b->data + (size_t)bid * b->size);
    buf->len = b->size;
    buf->bid = (uint16_t)bid;
    b->tail++;
}

static void bufring_publish(BufRingObject *b)
{
    __atomic_store_n(&b->br->tail, b->tail, __ATOMIC_RELEASE);
}

static PyObject *Ring_register_buf_ring(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"group", "entries", "size", NULL};
    unsigned group, entries, size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "III:register_buf_ring", kwlist, &group, &entries,
                                     &size))
        return NULL;
    if (ring_check_usable(r) < 0)
        return NULL;
    if (group > 65535 || entries < 1 || entries > 32768 || (entries & (entries - 1)) ||
        size < 1 || size > (1u << 24)) {
        PyErr_SetString(PyExc_ValueError, "group 0..65535, entries a power of two up to 32768, "
                                          "size 1..16 MiB");
        return NULL;
    }
    if (!r->buf_rings && !(r->buf_rings = PyDict_New()))
        return NULL;
    BufRingObject *b = PyObject_New(BufRingObject, &BufRingType);
    if (!b)
        return NULL;
    b->ring = r;
    b->entries = entries;
    b->size = size;
    b->mask = entries - 1;
    b->bgid = (uint16_t)group;
    b->tail = 0;
    b->registered = 0;
    b->ring_bytes = entries * sizeof(struct io_uring_buf);
    b->data_bytes = (size_t)entries * size;
    b->br = mmap(NULL, b->ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    b->data = mmap(NULL, b->data_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->br == MAP_FAILED || b->data == MAP_FAILED) {
        int err = errno;
        if (b->br == MAP_FAILED)
            b->br = NULL;
        if (b->data == MAP_FAILED)
            b->data = NULL;
        Py_DECREF(b);
        return sr_oserror(err, "mmap");
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)b->br;
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)group;
    if (ring_register(r, SR_REGISTER_PBUF_RING, &reg, 1) < 0) {
        int err = errno;
        Py_DECREF(b);
        return memlock_error(err, "IORING_REGISTER_PBUF_RING");
    }
    b->registered = 1;
    for (unsigned i = 0; i < entries; i++)
        bufring_add(b, i);
    bufring_publish(b);
    PyObject *key = PyLong_FromUnsignedLong(group);
    if (!key || PyDict_SetItem(r->buf_rings, key, (PyObject *)b) < 0) {
        Py_XDECREF(key);
        Py_DECREF(b);
        return NULL;
    }
    Py_DECREF(key);
    return (PyObject *)b;
}

static void BufRing_dealloc(BufRingObject *b)
{
    /* Only reached once the ring dropped its reference: at ring teardown (the kernel ring
     * is being destroyed with it) or after unregister. */
    if (b->br)
        munmap(b->br, b->ring_bytes);
    if (b->data)
        munmap(b->data, b->data_bytes);
    PyObject_Free(b);
}

static int bufring_bid(BufRingObject *b, PyObject *arg)
{
    long bid = PyLong_AsLong(arg);
    if (bid == -1 && PyErr_Occurred())
        return -1;
    if (bid < 0 || (unsigned long)bid >= b->entries) {
        PyErr_SetString(PyExc_ValueError, "no such buffer id in this ring");
        return -1;
    }
    return (int)bid;
}

/* The buffer and length a completion names, for take(req) and forwarding. The caller marks
 * the buffer taken (clears IORING_CQE_F_BUFFER) once it has it, so a second take of the same
 * completion cannot recycle the buffer twice. Returns 1 with *bid and *n set, 0 for end of
 * file (no buffer, res 0), -1 with an exception. */
static int completion_buffer(BufRingObject *b, RequestObject *req, int *bid, Py_ssize_t *n)
{
    if (!req->selects_buffer || req->buf_group != b->bgid) {
        PyErr_SetString(PyExc_ValueError, "the request does not read into this buffer ring");
        return -1;
    }
    if (req->res < 0) {
        sr_oserror(-req->res, NULL);
        return -1;
    }
    if (!(req->flags & IORING_CQE_F_BUFFER)) {
        if (req->res == 0)
            return 0;
        PyErr_SetString(PyExc_ValueError, "the completion's buffer was already taken");
        return -1;
    }
    *bid = (int)(req->flags >> IORING_CQE_BUFFER_SHIFT);
    *n = req->res;
    if ((unsigned)*bid >= b->entries) {
        PyErr_SetString(PyExc_ValueError, "no such buffer id in this ring");
        return -1;
    }
    return 1;
}

PyObject *bufring_lookup(RingObject *r, unsigned group)
{
    if (!r->buf_rings)
        return NULL;
    PyObject *key = PyLong_FromUnsignedLong(group);
    PyObject *b = key ? PyDict_GetItemWithError(r->buf_rings, key) : NULL;
    Py_XDECREF(key);
    if (!b)
        PyErr_Clear();
    return b;
}

/* For write(fd, req)/send(fd, req): the buffer ring and slot holding the data of the
 * completion src, with a new reference to the ring in *ring_buffers. The caller marks the
 * completion's buffer handed over once its op is queued. */
int bufring_forward(RingObject *r, RequestObject *src, PyObject **ring_buffers, char **addr,
                    Py_ssize_t *len, uint16_t *bid)
{
    BufRingObject *b = NULL;
    if (src->selects_buffer && src->keep && Py_IS_TYPE(src->keep, &BufRingType))
        b = (BufRingObject *)src->keep;           /* noted when the request was made */
    else if (src->selects_buffer)
        b = (BufRingObject *)bufring_lookup(r, src->buf_group);
    if (!b) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "the request does not read into a buffer ring "
                                              "of this Ring");
        return -1;
    }
    int n_bid;
    Py_ssize_t n;
    int rc = completion_buffer(b, src, &n_bid, &n);
    if (rc <= 0) {
        if (rc == 0)
            PyErr_SetString(PyExc_ValueError, "the completion carries no data (end of file)");
        return -1;
    }
    *ring_buffers = Py_NewRef((PyObject *)b);
    *addr = b->data + (size_t)n_bid * b->size;
    *len = n;
    *bid = (uint16_t)n_bid;
    return 0;
}

void bufring_give_back(PyObject *ring_buffers, uint16_t bid)
{
    BufRingObject *b = (BufRingObject *)ring_buffers;
    if (b && b->registered && bid < b->entries) {
        bufring_add(b, bid);
        bufring_publish(b);
    }
}

/* take(req) or take(bid, nbytes) -> bytes: copies the data out and gives the buffer back to
 * the kernel. take(req) is the usual form in a completion handler: b"" at end of file, OSError
 * for a failed completion. */
static PyObject *BufRing_take(BufRingObject *b, PyObject *const *args, Py_ssize_t nargs)
{
    int bid;
    Py_ssize_t n;
    if (!b->registered) {
        PyErr_SetString(PyExc_ValueError, "buffer ring is unregistered");
        return NULL;
    }
    if (nargs == 1 && PyObject_TypeCheck(args[0], &RequestType)) {
        int rc = completion_buffer(b, (RequestObject *)args[0], &bid, &n);
        if (rc <= 0)
            return rc < 0 ? NULL : PyBytes_FromStringAndSize(NULL, 0);
        ((RequestObject *)args[0])->flags &= ~(uint32_t)IORING_CQE_F_BUFFER;   /* taken */
    } else if (nargs == 2) {
        n = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        bid = bufring_bid(b, args[0]);
        if (bid < 0)
            return NULL;
    } else {
        PyErr_SetString(PyExc_TypeError, "take() takes a completed request or (buffer_id, nbytes)");
        return NULL;
    }
    if (n < 0 || (size_t)n > b->size) {
        PyErr_SetString(PyExc_ValueError, "nbytes outside the buffer");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(b->data + (size_t)bid * b->size, n);
    if (out) {
        bufring_add(b, (unsigned)bid);
        bufring_publish(b);
    }
    return out;
}

static PyObject *BufRing_unregister(BufRingObject *b, PyObject *unused)
{
    (void)unused;
    if (!b->registered || !b->ring)
        Py_RETURN_NONE;
    RingObject *r = b->ring;
    if (ring_check_usable(r) < 0)
        return NULL;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.bgid = b->bgid;
    if (ring_register(r, SR_UNREGISTER_PBUF_RING, &reg, 1) < 0)
        return sr_oserror(errno, "IORING_UNREGISTER_PBUF_RING");
    b->registered = 0;
    PyObject *key = PyLong_FromUnsignedLong(b->bgid);
    if (key) {
        Py_INCREF(b);  /* survive leaving the dict until we return */
        PyDict_DelItem(r->buf_rings, key);
        Py_DECREF(key);
        PyErr_Clear();
        Py_DECREF(b);
    }
    Py_RETURN_NONE;
}

static PyMethodDef BufRing_methods[] = {
    {"take", (PyCFunction)(void (*)(void))BufRing_take, METH_FASTCALL,
     "take(req) or take(buffer_id, nbytes) -> bytes\n\nCopy a received buffer out and recycle it. "
     "take(req) takes the buffer a completion names: b'' at end of file, OSError for an error."},
    {"unregister", (PyCFunction)BufRing_unregister, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef BufRing_members[] = {
    {"group", T_USHORT, offsetof(BufRingObject, bgid), READONLY, "buffer group id"},
    {"size", T_UINT, offsetof(BufRingObject, size), READONLY, "bytes per buffer"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject BufRingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._uring.BufRing",
    .tp_basicsize = sizeof(BufRingObject),
    .tp_dealloc = (destructor)BufRing_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A provided buffer ring: the kernel picks a buffer for each multishot receive.",
    .tp_methods = BufRing_methods,
    .tp_members = BufRing_members,
};

/* IORING_REGISTER_PERSONALITY: the calling thread's credentials (uid, gids, groups,
 * capabilities) as they are now, under a new id that an SQE can name. */
static PyObject *Ring_register_personality(RingObject *r, PyObject *unused)
{
    (void)unused;
    if (ring_check_usable(r) < 0)
        return NULL;
    int id = ring_register(r, IORING_REGISTER_PERSONALITY, NULL, 0);
    if (id < 0)
        return sr_oserror(errno, "IORING_REGISTER_PERSONALITY");
    return PyLong_FromLong(id);
}

static PyObject *Ring_unregister_personality(RingObject *r, PyObject *arg)
{
    if (ring_check_usable(r) < 0)
        return NULL;
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (id < 1 || id > UINT16_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a personality id");
        return NULL;
    }
    if (ring_register(r, IORING_UNREGISTER_PERSONALITY, NULL, (unsigned)id) < 0)
        return sr_oserror(errno, "IORING_UNREGISTER_PERSONALITY");
    if (r->personality == id)
        r->personality = 0;
    Py_RETURN_NONE;
}

PyMethodDef ring_register_methods[] = {
    {"register_personality", (PyCFunction)Ring_register_personality, METH_NOARGS,
     "register_personality() -> int\n\nRegisters the calling thread's current credentials; "
     "ops prepared while ring.personality is the id run with them."},
    {"unregister_personality", (PyCFunction)Ring_unregister_personality, METH_O,
     "unregister_personality(id)"},
    {"register_buffers", (PyCFunction)Ring_register_buffers, METH_O,
     "register_buffers(buffers)\n\nPin writable buffers for read_fixed/write_fixed/send_zc; "
     "they stay pinned (not resizable) until unregister_buffers() or close()."},
    {"unregister_buffers", (PyCFunction)Ring_unregister_buffers, METH_NOARGS, NULL},
    {"register_files", (PyCFunction)Ring_register_files, METH_O,
     "register_files(fds | count)\n\nThe fixed file table; ops use an index as fd with "
     "sqe_flags=FIXED_FILE."},
    {"update_files", (PyCFunction)Ring_update_files, METH_VARARGS,
     "update_files(offset, fds) -> int"},
    {"unregister_files", (PyCFunction)Ring_unregister_files, METH_NOARGS, NULL},
    {"register_buf_ring", (PyCFunction)(void (*)(void))Ring_register_buf_ring,
     METH_VARARGS | METH_KEYWORDS,
     "register_buf_ring(group, entries, size) -> BufRing\n\nProvided buffers for recv_multishot."},
    {NULL, NULL, 0, NULL},
};

/* At ring teardown: buffer rings still referenced from Python forget their ring. */
static void bufrings_detach(RingObject *r)
{
    if (!r->buf_rings)
        return;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(r->buf_rings, &pos, &key, &value)) {
        BufRingObject *b = (BufRingObject *)value;
        b->ring = NULL;
        b->registered = 0;
    }
}

/* At close. Where requests the kernel did not finish were abandoned (requests_abandon),
 * the registered buffers and buffer rings they may be using are kept alive with them: the
 * kernel may still write into those pages, and memory given back could hold other objects
 * by then. Their views stay exported (the objects are never resized or freed) and the
 * buffer rings keep a reference each: leaked on purpose, as the requests' own buffers. */
void register_release_all(RingObject *r, int abandoned)
{
    if (abandoned) {
        PyMem_Free(r->registered);      /* (the Py_buffer views are not released) */
        r->registered = NULL;
        r->nregistered = 0;
        if (r->buf_rings) {
            PyObject *key, *value;
            Py_ssize_t pos = 0;
            while (PyDict_Next(r->buf_rings, &pos, &key, &value))
                Py_INCREF(value);
        }
    } else {
        release_registered(r);
    }
    bufrings_detach(r);
    Py_CLEAR(r->buf_rings);
}
