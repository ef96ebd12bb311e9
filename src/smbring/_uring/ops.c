/*
 * One method per io_uring op, in the manner of liburing's io_uring_prep_* helpers: parse and
 * pin the arguments first (anything that can fail), then take the SQE and fill it in.
 * Every op takes the keyword-only arguments callback=None and sqe_flags=0 and returns the
 * Request (or Batch) that its completions are delivered to.
 */
#include "ops.h"
#include "register.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/stat.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#define TAIL_KW "callback", "sqe_flags", NULL
#define TAIL_FMT "$Oi"

#define BEGIN(opcode)                                       \
    RequestObject *req = request_new(r, (opcode), cb);      \
    struct io_uring_sqe *sqe;                               \
    if (!req)                                               \
        return NULL
#define QUEUE(fd)                                                     \
    do {                                                              \
        if (!(sqe = request_queue(req, r, (fd), sqe_flags)))          \
            goto fail;                                                \
    } while (0)
#define END                       \
    return (PyObject *)req;       \
fail:                             \
    Py_DECREF(req);               \
    return NULL

static int check_len(Py_ssize_t len)
{
    if ((size_t)len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "buffer larger than 4 GiB - 1 in one op");
        return -1;
    }
    return 0;
}

/* Keeps an encoded path alive in req->keep and returns its C string. */
static const char *keep_path(RequestObject *req, PyObject *path)
{
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path, &bytes))
        return NULL;
    if (!req->keep) {
        req->keep = PyList_New(0);
        if (!req->keep) {
            Py_DECREF(bytes);
            return NULL;
        }
    }
    int rc = PyList_Append(req->keep, bytes);
    Py_DECREF(bytes);
    return rc < 0 ? NULL : PyBytes_AS_STRING(bytes);
}

/* Pins a sequence of buffers as an iovec array in req->mem (after `extra` bytes of header). */
static struct iovec *pin_iovecs(RequestObject *req, PyObject *seq, int writable, size_t extra,
                                unsigned *count)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of buffers");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1 || n > 1024) {
        PyErr_SetString(PyExc_ValueError, "between 1 and 1024 buffers are required");
        Py_DECREF(fast);
        return NULL;
    }
    char *mem = request_alloc(req, extra + (size_t)n * sizeof(struct iovec));
    if (!mem || request_reserve_views(req, (int)n) < 0) {
        Py_DECREF(fast);
        return NULL;
    }
    struct iovec *iov = (struct iovec *)(mem + extra);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer *v;
        if (request_pin(req, PySequence_Fast_GET_ITEM(fast, i), writable, &v) < 0) {
            Py_DECREF(fast);
            return NULL;
        }
        iov[i].iov_base = v->buf;
        iov[i].iov_len = (size_t)v->len;
    }
    Py_DECREF(fast);
    *count = (unsigned)n;
    return iov;
}

static struct __kernel_timespec *timespec_in(RequestObject *req, double seconds)
{
    if (seconds < 0 || seconds != seconds) {
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number of seconds");
        return NULL;
    }
    struct __kernel_timespec *ts = request_alloc(req, sizeof(*ts));
    if (ts) {
        ts->tv_sec = (long long)seconds;
        ts->tv_nsec = (long long)((seconds - (double)ts->tv_sec) * 1e9);
    }
    return ts;
}

/* ---- results built at the last completion ------------------------------------------------ */

static PyStructSequence_Field statx_fields[] = {
    {"mask", "STATX_* bits the kernel filled in"},
    {"mode", NULL}, {"ino", NULL}, {"dev", "major << 32 | minor"}, {"nlink", NULL},
    {"uid", NULL}, {"gid", NULL}, {"size", NULL}, {"blocks", NULL}, {"blksize", NULL},
    {"attributes", NULL},
    {"atime_ns", NULL}, {"mtime_ns", NULL}, {"ctime_ns", NULL},
    {"btime_ns", "birth time, or None where the file system has none"},
    {NULL, NULL},
};

static PyStructSequence_Desc statx_desc = {
    "smbring._uring.Statx", "The result of a statx op.", statx_fields, 15,
};

static PyTypeObject *statx_type;

int ops_add_types(PyObject *module)
{
    statx_type = PyStructSequence_NewType(&statx_desc);
    if (!statx_type)
        return -1;
    return PyModule_AddObjectRef(module, "Statx", (PyObject *)statx_type);
}

static PyObject *statx_value(const struct statx *st)
{
    PyObject *v = PyStructSequence_New(statx_type);
    if (!v)
        return NULL;
#define TS_NS(t) PyLong_FromLongLong((long long)(t).tv_sec * 1000000000LL + (t).tv_nsec)
    PyObject *items[] = {
        PyLong_FromUnsignedLong(st->stx_mask),
        PyLong_FromUnsignedLong(st->stx_mode),
        PyLong_FromUnsignedLongLong(st->stx_ino),
        PyLong_FromUnsignedLongLong(((unsigned long long)st->stx_dev_major << 32) | st->stx_dev_minor),
        PyLong_FromUnsignedLong(st->stx_nlink),
        PyLong_FromUnsignedLong(st->stx_uid),
        PyLong_FromUnsignedLong(st->stx_gid),
        PyLong_FromUnsignedLongLong(st->stx_size),
        PyLong_FromUnsignedLongLong(st->stx_blocks),
        PyLong_FromUnsignedLong(st->stx_blksize),
        PyLong_FromUnsignedLongLong(st->stx_attributes),
        TS_NS(st->stx_atime), TS_NS(st->stx_mtime), TS_NS(st->stx_ctime),
        (st->stx_mask & STATX_BTIME) ? TS_NS(st->stx_btime) : Py_NewRef(Py_None),
    };
#undef TS_NS
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
        if (!items[i]) {
            for (size_t j = i + 1; j < sizeof(items) / sizeof(items[0]); j++)
                Py_XDECREF(items[j]);
            Py_DECREF(v);
            return NULL;
        }
        PyStructSequence_SET_ITEM(v, (Py_ssize_t)i, items[i]);
    }
    return v;
}

static PyObject *epoll_value(const struct epoll_event *ev, int n)
{
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *t = Py_BuildValue("(iI)", (int)ev[i].data.fd, ev[i].events);
        if (!t) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

/* The request_finish_fn of the ops with a result value: built from what the kernel wrote
 * into the request's scratch memory, once, at the last completion. */
static int finish_statx(RequestObject *req)
{
    return req->res < 0 || (req->value = statx_value(req->mem)) ? 0 : -1;
}

static int finish_epoll_wait(RequestObject *req)
{
    return req->res < 0 || (req->value = epoll_value(req->mem, req->res)) ? 0 : -1;
}

static int finish_recvmsg(RequestObject *req)
{
    struct msghdr *m = req->mem;
    return req->res < 0 || (req->value = PyLong_FromLong(m->msg_flags)) ? 0 : -1;
}

/* write(fd, req) / send(fd, req) is done with the provided buffer it sent from (whatever
 * the result): the buffer goes back to the ring it came from, held in req->keep. */
static int finish_give_back(RequestObject *req)
{
    bufring_give_back(req->keep, req->give_back_bid);
    return 0;
}

/* ---- generic ---------------------------------------------------------------------------- */

static PyObject *op_nop(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {TAIL_KW};
    PyObject *cb = NULL;
    int sqe_flags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|" TAIL_FMT ":nop", kwlist, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_NOP);
    QUEUE(-1);
    END;
}

/* ---- read / write ---------------------------------------------------------------------- */

/* The SQE of a one-buffer op once its arguments are parsed: `extra` is the file offset
 * (read/write) or the MSG_* flags (send/recv). The kernel writes into the buffer for read and
 * recv, so those pin it writable. */
static PyObject *queue_buffer_op(RingObject *r, int opcode, int fd, PyObject *buf, long long extra,
                                 PyObject *cb, int sqe_flags)
{
    BEGIN(opcode);
    char *addr;
    Py_ssize_t len;
    uint16_t bid = 0;
    int writable = opcode == IORING_OP_READ || opcode == IORING_OP_RECV;
    /* write(fd, req) / send(fd, req): the data a multishot completion put in a provided
     * buffer, sent from that buffer as it is; the buffer goes back at this op's completion */
    RequestObject *src = !writable && Py_IS_TYPE(buf, &RequestType) ? (RequestObject *)buf : NULL;
    if (src) {
        if (bufring_forward(r, src, &req->keep, &addr, &len, &bid) < 0)
            goto fail;
    } else {
        Py_buffer *v;
        if (request_pin(req, buf, writable, &v) < 0 || check_len(v->len) < 0)
            goto fail;
        addr = v->buf;
        len = v->len;
    }
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)addr;
    sqe->len = (uint32_t)len;
    if (opcode == IORING_OP_SEND || opcode == IORING_OP_RECV)
        sqe->msg_flags = (uint32_t)extra;
    else
        sqe->off = (uint64_t)extra;
    if (src) {
        src->flags &= ~(uint32_t)IORING_CQE_F_BUFFER;   /* handed over: not taken twice */
        req->give_back_bid = bid;
        req->finish = finish_give_back;
    }
    END;
}

/* One buffer and a third argument: the file offset (read/write) or the MSG_* flags
 * (send/recv). The kernel writes into the buffer for read and recv. */
static PyObject *buffer_op(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kw_offset[] = {"fd", "buf", "offset", TAIL_KW};
    static char *kw_flags[] = {"fd", "buf", "flags", TAIL_KW};
    int is_socket = opcode == IORING_OP_SEND || opcode == IORING_OP_RECV;
    int fd, sqe_flags = 0;
    PyObject *buf, *cb = NULL;
    long long extra = is_socket ? 0 : -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, is_socket ? kw_flags : kw_offset, &fd, &buf,
                                     &extra, &cb, &sqe_flags))
        return NULL;
    return queue_buffer_op(r, opcode, fd, buf, extra, cb, sqe_flags);
}

/* Which keyword of the fast path `name` is: 1 callback, 2 sqe_flags, 0 neither. Names at a
 * call site are interned, so identity usually settles it without comparing text. */
static int fast_kwname(PyObject *name)
{
    static PyObject *callback, *sqe_flags;
    if (!callback && !(callback = PyUnicode_InternFromString("callback")))  /* kept for good */
        PyErr_Clear();  /* out of memory: the text comparison below still works */
    if (!sqe_flags && !(sqe_flags = PyUnicode_InternFromString("sqe_flags")))
        PyErr_Clear();
    if (name == callback)
        return 1;
    if (name == sqe_flags)
        return 2;
    if (PyUnicode_CompareWithASCIIString(name, "callback") == 0)
        return 1;
    return PyUnicode_CompareWithASCIIString(name, "sqe_flags") == 0 ? 2 : 0;
}

/* The vectorcall form of the hot buffer ops: the common calls (positional fd, buf and third
 * argument; callback= and sqe_flags= by keyword) are parsed without building an argument tuple
 * and keyword dict, which cost more than the op itself in an event loop. Any other spelling
 * goes to the general parser above, so both accept and refuse exactly the same calls. */
static PyObject *buffer_op_fast(RingObject *r, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames, int opcode, const char *fmt)
{
    int is_socket = opcode == IORING_OP_SEND || opcode == IORING_OP_RECV;
    PyObject *cb = NULL;
    long fd = 0, sqe_flags = 0;
    long long extra = is_socket ? 0 : -1;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    int general = nargs < 2 || nargs > 3 || !sr_small_int(args[0], &fd);
    for (Py_ssize_t i = 0; i < nkw && !general; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *value = args[nargs + i];
        int which = fast_kwname(name);
        if (which == 1)
            cb = value;
        else if (!(which == 2 && sr_small_int(value, &sqe_flags)))
            general = 1;
    }
    if (!general && nargs == 3) {
        if (!PyLong_CheckExact(args[2]))
            general = 1;
        else if ((extra = PyLong_AsLongLong(args[2])) == -1 && PyErr_Occurred())
            general = 1;   /* out of range: let the general parser raise its usual error */
    }
    if (general) {
        PyErr_Clear();
        PyObject *tuple = PyTuple_New(nargs), *kw = nkw ? PyDict_New() : NULL;
        if (!tuple || (nkw && !kw)) {
            Py_XDECREF(tuple);
            Py_XDECREF(kw);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                Py_DECREF(tuple);
                Py_DECREF(kw);
                return NULL;
            }
        PyObject *res = buffer_op(r, tuple, kw, opcode, fmt);
        Py_DECREF(tuple);
        Py_XDECREF(kw);
        return res;
    }
    return queue_buffer_op(r, opcode, (int)fd, args[1], extra, cb, (int)sqe_flags);
}

#define FAST_BUFFER_OP(name, opcode)                                                        \
    static PyObject *op_##name(RingObject *r, PyObject *const *a, Py_ssize_t n, PyObject *k) \
    {                                                                                       \
        return buffer_op_fast(r, a, n, k, (opcode), "iO|L" TAIL_FMT ":" #name);           \
    }

FAST_BUFFER_OP(read, IORING_OP_READ)
FAST_BUFFER_OP(write, IORING_OP_WRITE)
FAST_BUFFER_OP(send, IORING_OP_SEND)
FAST_BUFFER_OP(recv, IORING_OP_RECV)

static PyObject *rw_fixed(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kwlist[] = {"fd", "index", "offset", "length", "buf_offset", TAIL_KW};
    int fd, index, sqe_flags = 0;
    long long offset;
    Py_ssize_t length = -1, buf_offset = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &fd, &index, &offset, &length,
                                     &buf_offset, &cb, &sqe_flags))
        return NULL;
    if (index < 0 || index >= r->nregistered) {
        PyErr_Format(PyExc_ValueError, "no registered buffer %d (%d registered)", index,
                     r->nregistered);
        return NULL;
    }
    Py_buffer *reg = &r->registered[index];
    if (length < 0)
        length = reg->len - buf_offset;
    if (buf_offset < 0 || length < 0 || buf_offset + length > reg->len) {
        PyErr_SetString(PyExc_ValueError, "range outside the registered buffer");
        return NULL;
    }
    if (check_len(length) < 0)
        return NULL;
    BEGIN(opcode);
    req->uses_fixed_buffer = 1;
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)((char *)reg->buf + buf_offset);
    sqe->len = (uint32_t)length;
    sqe->off = (uint64_t)offset;
    sqe->buf_index = (uint16_t)index;
    END;
}

static PyObject *op_read_fixed(RingObject *r, PyObject *a, PyObject *k)
{
    return rw_fixed(r, a, k, IORING_OP_READ_FIXED, "iiL|nn" TAIL_FMT ":read_fixed");
}

static PyObject *op_write_fixed(RingObject *r, PyObject *a, PyObject *k)
{
    return rw_fixed(r, a, k, IORING_OP_WRITE_FIXED, "iiL|nn" TAIL_FMT ":write_fixed");
}

static PyObject *rwv(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kwlist[] = {"fd", "buffers", "offset", TAIL_KW};
    int fd, sqe_flags = 0;
    PyObject *bufs, *cb = NULL;
    long long offset = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &fd, &bufs, &offset, &cb, &sqe_flags))
        return NULL;
    BEGIN(opcode);
    unsigned n;
    struct iovec *iov = pin_iovecs(req, bufs, opcode == IORING_OP_READV, 0, &n);
    if (!iov)
        goto fail;
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)iov;
    sqe->len = n;
    sqe->off = (uint64_t)offset;
    END;
}

static PyObject *op_readv(RingObject *r, PyObject *a, PyObject *k)
{
    return rwv(r, a, k, IORING_OP_READV, "iO|L" TAIL_FMT ":readv");
}

static PyObject *op_writev(RingObject *r, PyObject *a, PyObject *k)
{
    return rwv(r, a, k, IORING_OP_WRITEV, "iO|L" TAIL_FMT ":writev");
}

/* Offsets for a batch: a buffer of native uint64 (array('Q'), numpy) is copied in one go,
 * anything else is read as a sequence of ints. Returns the count or -1. */
static Py_ssize_t batch_offsets(PyObject *offsets, uint64_t **out, RequestObject *req)
{
    Py_buffer view;
    if (PyObject_CheckBuffer(offsets) && !PyBytes_Check(offsets) && !PyByteArray_Check(offsets)) {
        if (PyObject_GetBuffer(offsets, &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            return -1;
        int ok = view.itemsize == 8 && view.format &&
                 (strcmp(view.format, "Q") == 0 || strcmp(view.format, "L") == 0 ||
                  strcmp(view.format, "q") == 0 || strcmp(view.format, "l") == 0);
        Py_ssize_t n = ok ? view.len / 8 : 0;
        if (!ok) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_TypeError, "an offsets buffer must hold 64-bit integers ('Q')");
            return -1;
        }
        *out = n ? request_alloc(req, (size_t)n * 8) : NULL;
        if (n && *out)
            memcpy(*out, view.buf, (size_t)n * 8);
        PyBuffer_Release(&view);
        return (n && !*out) ? -1 : n;
    }
    PyObject *fast = PySequence_Fast(offsets, "offsets must be a sequence of ints");
    if (!fast)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    *out = n ? request_alloc(req, (size_t)n * 8) : NULL;
    for (Py_ssize_t i = 0; *out && i < n; i++) {
        long long o = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (o == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        (*out)[i] = (uint64_t)o;
    }
    Py_DECREF(fast);
    return (n && !*out) ? -1 : n;
}

/* read_batch / write_batch: the hot path. Item i transfers `size` bytes at offsets[i] into
 * (or from) buf[i*size:(i+1)*size]; all items complete in C and the callback runs once.
 * With fixed_index, buf must lie inside that registered buffer (READ_FIXED/WRITE_FIXED). */
static PyObject *rw_batch(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kwlist[] = {"fd", "buf", "offsets", "size", "fixed_index", TAIL_KW};
    int fd, fixed_index = -1, sqe_flags = 0;
    PyObject *buf, *offsets, *cb = NULL;
    Py_ssize_t size = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &fd, &buf, &offsets, &size,
                                     &fixed_index, &cb, &sqe_flags))
        return NULL;
    if (sqe_flags & ~SR_USER_SQE_FLAGS) {
        PyErr_SetString(PyExc_ValueError, "invalid sqe_flags");
        return NULL;
    }
    if (fixed_index >= r->nregistered) {
        PyErr_Format(PyExc_ValueError, "no registered buffer %d", fixed_index);
        return NULL;
    }
    if (fixed_index >= 0)
        opcode = opcode == IORING_OP_READ ? IORING_OP_READ_FIXED : IORING_OP_WRITE_FIXED;
    int writes_memory = opcode == IORING_OP_READ || opcode == IORING_OP_READ_FIXED;
    BatchObject *b = batch_new(r, (uint8_t)opcode, cb, 0);
    if (!b)
        return NULL;
    RequestObject *req = &b->base;
    Py_buffer *v;
    uint64_t *offs = NULL;
    Py_ssize_t n = batch_offsets(offsets, &offs, req);
    if (n < 0)
        goto fail;
    if (n < 1 || n > (Py_ssize_t)*r->sq_entries * 16) {
        PyErr_SetString(PyExc_ValueError, "a batch needs between 1 and 16*sq_entries offsets");
        goto fail;
    }
    if (request_pin(req, buf, writes_memory, &v) < 0)
        goto fail;
    if (size == 0)
        size = v->len / n;
    if (size <= 0 || size * n > v->len || check_len(size) < 0) {
        PyErr_SetString(PyExc_ValueError, "buf is too small for len(offsets) items of size bytes");
        goto fail;
    }
    if (fixed_index >= 0) {
        Py_buffer *reg = &r->registered[fixed_index];
        char *lo = reg->buf, *hi = lo + reg->len, *p = v->buf;
        if (p < lo || p + size * n > hi) {
            PyErr_SetString(PyExc_ValueError, "buf does not lie inside that registered buffer");
            goto fail;
        }
        req->uses_fixed_buffer = 1;
    }
    BatchItem *items = PyMem_Malloc((size_t)n * sizeof(BatchItem));
    if (!items) {
        PyErr_NoMemory();
        goto fail;
    }
    PyMem_Free(b->items);
    b->items = items;
    b->count = b->remaining = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        items[i].batch = b;
        items[i].res = 0;
    }
    /* From here nothing fails but memory for the user-space queue. */
    request_start(req, r, fd, sqe_flags);
    char *base = v->buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = ring_next_sqe(r);
        if (!sqe) {
            /* the items not queued will never complete: account for them */
            b->remaining -= n - i;
            for (Py_ssize_t j = i; j < n; j++)
                items[j].res = -ENOMEM;
            PyErr_Clear();
            break;
        }
        sqe->opcode = (uint8_t)opcode;
        sqe->fd = fd;
        sqe->flags = (uint8_t)sqe_flags;
        sqe->addr = (uint64_t)(uintptr_t)(base + i * size);
        sqe->personality = r->personality;
        sqe->len = (uint32_t)size;
        sqe->off = offs[i];
        if (fixed_index >= 0)
            sqe->buf_index = (uint16_t)fixed_index;
        sqe->user_data = (uint64_t)(uintptr_t)&items[i] | SR_TAG_BATCH_ITEM;
    }
    if (b->remaining == 0)
        request_complete(req, -ENOMEM, 0, 1);  /* nothing could be queued at all */
    return (PyObject *)b;
fail:
    Py_DECREF(b);
    return NULL;
}

static PyObject *op_read_batch(RingObject *r, PyObject *a, PyObject *k)
{
    return rw_batch(r, a, k, IORING_OP_READ, "iOO|ni" TAIL_FMT ":read_batch");
}

static PyObject *op_write_batch(RingObject *r, PyObject *a, PyObject *k)
{
    return rw_batch(r, a, k, IORING_OP_WRITE, "iOO|ni" TAIL_FMT ":write_batch");
}

/* ---- file ops --------------------------------------------------------------------------- */

static PyObject *op_fsync(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "datasync", TAIL_KW};
    int fd, datasync = 0, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|p" TAIL_FMT ":fsync", kwlist, &fd, &datasync,
                                     &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_FSYNC);
    QUEUE(fd);
    sqe->fsync_flags = datasync ? IORING_FSYNC_DATASYNC : 0;
    END;
}

static PyObject *op_fadvise(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "offset", "length", "advice", TAIL_KW};
    int fd, advice, sqe_flags = 0;
    long long offset, length;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iLLi|" TAIL_FMT ":fadvise", kwlist, &fd, &offset,
                                     &length, &advice, &cb, &sqe_flags))
        return NULL;
    if (length < 0 || length > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "length must be between 0 and 4 GiB - 1 (0: to the end)");
        return NULL;
    }
    BEGIN(IORING_OP_FADVISE);
    QUEUE(fd);
    sqe->off = (uint64_t)offset;
    sqe->len = (uint32_t)length;
    sqe->fadvise_advice = (uint32_t)advice;
    END;
}

static PyObject *op_openat(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dirfd", "path", "flags", "mode", TAIL_KW};
    int dirfd, flags = O_RDONLY, mode = 0644, sqe_flags = 0;
    PyObject *path, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|ii" TAIL_FMT ":openat", kwlist, &dirfd, &path,
                                     &flags, &mode, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_OPENAT);
    const char *p = keep_path(req, path);
    if (!p)
        goto fail;
    QUEUE(dirfd);
    sqe->addr = (uint64_t)(uintptr_t)p;
    sqe->len = (uint32_t)mode;
    sqe->open_flags = (uint32_t)(flags | O_CLOEXEC);
    END;
}

static PyObject *op_openat2(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dirfd", "path", "flags", "mode", "resolve", TAIL_KW};
    int dirfd, flags = O_RDONLY, mode = 0, sqe_flags = 0;
    unsigned long long resolve = 0;
    PyObject *path, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|iiK" TAIL_FMT ":openat2", kwlist, &dirfd,
                                     &path, &flags, &mode, &resolve, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_OPENAT2);
    const char *p = keep_path(req, path);
    struct open_how *how = p ? request_alloc(req, sizeof(*how)) : NULL;
    if (!how)
        goto fail;
    how->flags = (uint64_t)(unsigned)(flags | O_CLOEXEC);
    how->mode = sr_open_takes_mode(flags) ? (uint64_t)mode : 0;
    how->resolve = resolve;
    QUEUE(dirfd);
    sqe->addr = (uint64_t)(uintptr_t)p;
    sqe->len = sizeof(*how);
    sqe->off = (uint64_t)(uintptr_t)how;
    END;
}

static PyObject *op_close_async(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", TAIL_KW};
    int fd, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|" TAIL_FMT ":close", kwlist, &fd, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_CLOSE);
    QUEUE(fd);
    END;
}

static PyObject *op_statx(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dirfd", "path", "flags", "mask", TAIL_KW};
    int dirfd, flags = 0, sqe_flags = 0;
    unsigned mask = STATX_BASIC_STATS | STATX_BTIME;
    PyObject *path, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|iI" TAIL_FMT ":statx", kwlist, &dirfd, &path,
                                     &flags, &mask, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_STATX);
    const char *p = keep_path(req, path);
    struct statx *st = p ? request_alloc(req, sizeof(*st)) : NULL;
    if (!st)
        goto fail;
    QUEUE(dirfd);
    sqe->addr = (uint64_t)(uintptr_t)p;
    sqe->len = mask;
    sqe->off = (uint64_t)(uintptr_t)st;
    sqe->statx_flags = (uint32_t)flags;
    req->finish = finish_statx;
    END;
}

static PyObject *op_unlinkat(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dirfd", "path", "flags", TAIL_KW};
    int dirfd, flags = 0, sqe_flags = 0;
    PyObject *path, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|i" TAIL_FMT ":unlinkat", kwlist, &dirfd, &path,
                                     &flags, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_UNLINKAT);
    const char *p = keep_path(req, path);
    if (!p)
        goto fail;
    QUEUE(dirfd);
    sqe->addr = (uint64_t)(uintptr_t)p;
    sqe->unlink_flags = (uint32_t)flags;
    END;
}

static PyObject *op_mkdirat(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dirfd", "path", "mode", TAIL_KW};
    int dirfd, mode = 0777, sqe_flags = 0;
    PyObject *path, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|i" TAIL_FMT ":mkdirat", kwlist, &dirfd, &path,
                                     &mode, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_MKDIRAT);
    const char *p = keep_path(req, path);
    if (!p)
        goto fail;
    QUEUE(dirfd);
    sqe->addr = (uint64_t)(uintptr_t)p;
    sqe->len = (uint32_t)mode;
    END;
}

/* renameat and linkat share a layout: (olddirfd, old, newdirfd, new, flags). */
static PyObject *two_paths(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kwlist[] = {"olddirfd", "oldpath", "newdirfd", "newpath", "flags", TAIL_KW};
    int olddirfd, newdirfd, flags = 0, sqe_flags = 0;
    PyObject *oldpath, *newpath, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &olddirfd, &oldpath, &newdirfd,
                                     &newpath, &flags, &cb, &sqe_flags))
        return NULL;
    BEGIN(opcode);
    const char *o = keep_path(req, oldpath);
    const char *n = o ? keep_path(req, newpath) : NULL;
    if (!n)
        goto fail;
    QUEUE(olddirfd);
    sqe->addr = (uint64_t)(uintptr_t)o;
    sqe->len = (uint32_t)newdirfd;
    sqe->off = (uint64_t)(uintptr_t)n;
    sqe->rename_flags = (uint32_t)flags;  /* shares the union slot with hardlink_flags */
    END;
}

static PyObject *op_renameat(RingObject *r, PyObject *a, PyObject *k)
{
    return two_paths(r, a, k, IORING_OP_RENAMEAT, "iOiO|i" TAIL_FMT ":renameat");
}

static PyObject *op_linkat(RingObject *r, PyObject *a, PyObject *k)
{
    return two_paths(r, a, k, IORING_OP_LINKAT, "iOiO|i" TAIL_FMT ":linkat");
}

static PyObject *op_symlinkat(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"target", "newdirfd", "linkpath", TAIL_KW};
    int newdirfd, sqe_flags = 0;
    PyObject *target, *linkpath, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiO|" TAIL_FMT ":symlinkat", kwlist, &target,
                                     &newdirfd, &linkpath, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_SYMLINKAT);
    const char *t = keep_path(req, target);
    const char *l = t ? keep_path(req, linkpath) : NULL;
    if (!l)
        goto fail;
    QUEUE(newdirfd);
    sqe->addr = (uint64_t)(uintptr_t)t;
    sqe->off = (uint64_t)(uintptr_t)l;
    END;
}

/* getxattr(path, name, buf) / fgetxattr(fd, name, buf) and the set variants. */
static PyObject *xattr(RingObject *r, PyObject *args, PyObject *kw, int opcode, int by_path,
                       int set)
{
    static char *kwlist_path[] = {"path", "name", "value", "flags", TAIL_KW};
    static char *kwlist_fd[] = {"fd", "name", "value", "flags", TAIL_KW};
    int fd = -1, flags = 0, sqe_flags = 0;
    PyObject *target, *name, *value, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|i" TAIL_FMT ":xattr",
                                     by_path ? kwlist_path : kwlist_fd, &target, &name, &value,
                                     &flags, &cb, &sqe_flags))
        return NULL;
    if (!by_path) {
        fd = sr_as_int(target);
        if (fd == -1 && PyErr_Occurred())
            return NULL;
    }
    BEGIN(opcode);
    const char *p = by_path ? keep_path(req, target) : "";
    const char *n = p ? keep_path(req, name) : NULL;
    Py_buffer *v;
    if (!n || request_pin(req, value, !set, &v) < 0 || check_len(v->len) < 0)
        goto fail;
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)n;
    sqe->off = (uint64_t)(uintptr_t)v->buf;  /* addr2: the value */
    sqe->len = (uint32_t)v->len;
    sqe->xattr_flags = (uint32_t)flags;
    if (by_path)
        sqe->addr3 = (uint64_t)(uintptr_t)p;
    END;
}

static PyObject *op_getxattr(RingObject *r, PyObject *a, PyObject *k)
{
    return xattr(r, a, k, IORING_OP_GETXATTR, 1, 0);
}
static PyObject *op_setxattr(RingObject *r, PyObject *a, PyObject *k)
{
    return xattr(r, a, k, IORING_OP_SETXATTR, 1, 1);
}
static PyObject *op_fgetxattr(RingObject *r, PyObject *a, PyObject *k)
{
    return xattr(r, a, k, IORING_OP_FGETXATTR, 0, 0);
}
static PyObject *op_fsetxattr(RingObject *r, PyObject *a, PyObject *k)
{
    return xattr(r, a, k, IORING_OP_FSETXATTR, 0, 1);
}

/* ---- sockets ---------------------------------------------------------------------------- */

/* The kernel picks each completion's buffer from group's buffer ring; the request notes the
 * ring, so that take(req) and write(fd, req) find it without a lookup. */
static void select_buffers(RingObject *r, RequestObject *req, struct io_uring_sqe *sqe, int group)
{
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (uint16_t)group;
    req->selects_buffer = 1;
    req->buf_group = (uint16_t)group;
    req->keep = Py_XNewRef(bufring_lookup(r, (unsigned)group));
}

/* Multishot recv into a provided buffer ring: one CQE per arrival, req.buffer_id says where. */
static PyObject *op_recv_multishot(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "group", "flags", TAIL_KW};
    int fd, group, flags = 0, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|i" TAIL_FMT ":recv_multishot", kwlist, &fd,
                                     &group, &flags, &cb, &sqe_flags))
        return NULL;
    if (group < 0 || group > 65535) {
        PyErr_SetString(PyExc_ValueError, "group must be a buffer group id (0..65535)");
        return NULL;
    }
    BEGIN(IORING_OP_RECV);
    QUEUE(fd);
    select_buffers(r, req, sqe, group);
    sqe->ioprio = IORING_RECV_MULTISHOT;
    sqe->msg_flags = (uint32_t)flags;
    END;
}

/* Multishot read (6.7+) into a provided buffer ring: stays armed, one completion per
 * arrival on a pipe or socket (req.buffer_id, req.more); no re-arming between reads. */
static PyObject *op_read_multishot(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "group", TAIL_KW};
    int fd, group, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|" TAIL_FMT ":read_multishot", kwlist, &fd,
                                     &group, &cb, &sqe_flags))
        return NULL;
    if (group < 0 || group > 65535) {
        PyErr_SetString(PyExc_ValueError, "group must be a buffer group id (0..65535)");
        return NULL;
    }
    BEGIN(SR_OP_READ_MULTISHOT);
    QUEUE(fd);
    select_buffers(r, req, sqe, group);
    END;
}

static PyObject *msg(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kwlist[] = {"fd", "buffers", "flags", TAIL_KW};
    int fd, flags = 0, sqe_flags = 0;
    PyObject *bufs, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &fd, &bufs, &flags, &cb, &sqe_flags))
        return NULL;
    BEGIN(opcode);
    unsigned n;
    struct iovec *iov = pin_iovecs(req, bufs, opcode == IORING_OP_RECVMSG, sizeof(struct msghdr), &n);
    if (!iov)
        goto fail;
    struct msghdr *m = req->mem;
    m->msg_iov = iov;
    m->msg_iovlen = n;
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)m;
    sqe->len = 1;
    sqe->msg_flags = (uint32_t)flags;
    if (opcode == IORING_OP_SENDMSG_ZC)
        sqe->ioprio = IORING_SEND_ZC_REPORT_USAGE;
    if (opcode == IORING_OP_RECVMSG)
        req->finish = finish_recvmsg;
    END;
}

static PyObject *op_sendmsg(RingObject *r, PyObject *a, PyObject *k)
{
    return msg(r, a, k, IORING_OP_SENDMSG, "iO|i" TAIL_FMT ":sendmsg");
}

static PyObject *op_recvmsg(RingObject *r, PyObject *a, PyObject *k)
{
    return msg(r, a, k, IORING_OP_RECVMSG, "iO|i" TAIL_FMT ":recvmsg");
}

static PyObject *op_sendmsg_zc(RingObject *r, PyObject *a, PyObject *k)
{
    return msg(r, a, k, IORING_OP_SENDMSG_ZC, "iO|i" TAIL_FMT ":sendmsg_zc");
}

/* Zero-copy send: two completions, the result (flags & MORE) and then the notification that
 * the buffer is free again (req.notif, req.zc_copied). The buffer stays pinned until then. */
static PyObject *op_send_zc(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "buf", "flags", "fixed_index", TAIL_KW};
    int fd, flags = 0, fixed_index = -1, sqe_flags = 0;
    PyObject *buf, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|ii" TAIL_FMT ":send_zc", kwlist, &fd, &buf,
                                     &flags, &fixed_index, &cb, &sqe_flags))
        return NULL;
    if (fixed_index >= r->nregistered) {
        PyErr_Format(PyExc_ValueError, "no registered buffer %d", fixed_index);
        return NULL;
    }
    BEGIN(IORING_OP_SEND_ZC);
    Py_buffer *v;
    if (request_pin(req, buf, 0, &v) < 0 || check_len(v->len) < 0)
        goto fail;
    if (fixed_index >= 0) {
        Py_buffer *reg = &r->registered[fixed_index];
        char *lo = reg->buf, *hi = lo + reg->len, *p = v->buf;
        if (p < lo || p + v->len > hi) {
            PyErr_SetString(PyExc_ValueError, "buf does not lie inside that registered buffer");
            goto fail;
        }
        req->uses_fixed_buffer = 1;
    }
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)v->buf;
    sqe->len = (uint32_t)v->len;
    sqe->msg_flags = (uint32_t)flags;
    sqe->ioprio = IORING_SEND_ZC_REPORT_USAGE;
    if (fixed_index >= 0) {
        sqe->ioprio |= IORING_RECVSEND_FIXED_BUF;
        sqe->buf_index = (uint16_t)fixed_index;
    }
    END;
}

static PyObject *op_accept(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "flags", "multishot", TAIL_KW};
    int fd, flags = SOCK_CLOEXEC, multishot = 0, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|ip" TAIL_FMT ":accept", kwlist, &fd, &flags,
                                     &multishot, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_ACCEPT);
    QUEUE(fd);
    sqe->accept_flags = (uint32_t)flags;
    if (multishot)
        sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    END;
}

/* address: (host, port) for IPv4/IPv6 (numeric host), or a str/bytes path for AF_UNIX. */
static int parse_sockaddr(PyObject *address, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (PyTuple_Check(address)) {
        const char *host;
        int port;
        if (!PyArg_ParseTuple(address, "si;address must be (host, port)", &host, &port))
            return -1;
        if (port < 0 || port > 65535) {
            PyErr_SetString(PyExc_ValueError, "port must be 0..65535");
            return -1;
        }
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
            in4->sin_family = AF_INET;
            in4->sin_port = htons((uint16_t)port);
            *len = sizeof(*in4);
            return 0;
        }
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)port);
            *len = sizeof(*in6);
            return 0;
        }
        PyErr_SetString(PyExc_ValueError, "host must be a numeric IPv4 or IPv6 address");
        return -1;
    }
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(address, &bytes))
        return -1;
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    if (n >= (Py_ssize_t)sizeof(un->sun_path)) {
        Py_DECREF(bytes);
        PyErr_SetString(PyExc_ValueError, "AF_UNIX path too long");
        return -1;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, PyBytes_AS_STRING(bytes), (size_t)n);
    Py_DECREF(bytes);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
    return 0;
}

static PyObject *op_connect(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "address", TAIL_KW};
    int fd, sqe_flags = 0;
    PyObject *address, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO|" TAIL_FMT ":connect", kwlist, &fd, &address,
                                     &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_CONNECT);
    struct sockaddr_storage *ss = request_alloc(req, sizeof(*ss));
    socklen_t len;
    if (!ss || parse_sockaddr(address, ss, &len) < 0)
        goto fail;
    QUEUE(fd);
    sqe->addr = (uint64_t)(uintptr_t)ss;
    sqe->off = len;
    END;
}

static PyObject *op_shutdown(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "how", TAIL_KW};
    int fd, how = SHUT_RDWR, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|i" TAIL_FMT ":shutdown", kwlist, &fd, &how, &cb,
                                     &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_SHUTDOWN);
    QUEUE(fd);
    sqe->len = (uint32_t)how;
    END;
}

/* ---- splice / tee ----------------------------------------------------------------------- */

static PyObject *op_splice(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd_in", "off_in", "fd_out", "off_out", "nbytes", "flags", TAIL_KW};
    int fd_in, fd_out, flags = 0, sqe_flags = 0;
    long long off_in, off_out;
    unsigned nbytes;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iLiLI|i" TAIL_FMT ":splice", kwlist, &fd_in,
                                     &off_in, &fd_out, &off_out, &nbytes, &flags, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_SPLICE);
    QUEUE(fd_out);
    sqe->splice_fd_in = fd_in;
    sqe->splice_off_in = (uint64_t)off_in;  /* -1: use and advance the file position */
    sqe->off = (uint64_t)off_out;
    sqe->len = nbytes;
    sqe->splice_flags = (uint32_t)flags;
    END;
}

static PyObject *op_tee(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd_in", "fd_out", "nbytes", "flags", TAIL_KW};
    int fd_in, fd_out, flags = 0, sqe_flags = 0;
    unsigned nbytes;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiI|i" TAIL_FMT ":tee", kwlist, &fd_in, &fd_out,
                                     &nbytes, &flags, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_TEE);
    QUEUE(fd_out);
    sqe->splice_fd_in = fd_in;
    sqe->len = nbytes;
    sqe->splice_flags = (uint32_t)flags;
    END;
}

/* ---- poll, timeouts, cancellation, epoll ------------------------------------------------ */

static PyObject *op_poll_add(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "events", "multishot", TAIL_KW};
    int fd, multishot = 0, sqe_flags = 0;
    unsigned events;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iI|p" TAIL_FMT ":poll_add", kwlist, &fd, &events,
                                     &multishot, &cb, &sqe_flags))
        return NULL;
    BEGIN(IORING_OP_POLL_ADD);
    QUEUE(fd);
    sqe->poll32_events = events;
    if (multishot)
        sqe->len = IORING_POLL_ADD_MULTI;
    END;
}

static int target_user_data(RingObject *r, PyObject *target, uint64_t *out)
{
    if (!PyObject_TypeCheck(target, &RequestType) || PyObject_TypeCheck(target, &BatchType)) {
        PyErr_SetString(PyExc_TypeError, "target must be a Request of this ring");
        return -1;
    }
    RequestObject *t = (RequestObject *)target;
    if (t->ring && t->ring != r) {
        PyErr_SetString(PyExc_ValueError, "target belongs to another ring");
        return -1;
    }
    *out = (uint64_t)(uintptr_t)t;
    return 0;
}

static PyObject *op_poll_remove(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"target", TAIL_KW};
    int sqe_flags = 0;
    PyObject *target, *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|" TAIL_FMT ":poll_remove", kwlist, &target, &cb,
                                     &sqe_flags))
        return NULL;
    uint64_t ud;
    if (target_user_data(r, target, &ud) < 0)
        return NULL;
    BEGIN(IORING_OP_POLL_REMOVE);
    QUEUE(-1);
    sqe->addr = ud;
    END;
}

static PyObject *timeout_op(RingObject *r, PyObject *args, PyObject *kw, int opcode, const char *fmt)
{
    static char *kwlist[] = {"seconds", "count", "absolute", TAIL_KW};
    double seconds;
    unsigned count = 0;
    int absolute = 0, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &seconds, &count, &absolute, &cb,
                                     &sqe_flags))
        return NULL;
    BEGIN(opcode);
    struct __kernel_timespec *ts = timespec_in(req, seconds);
    if (!ts)
        goto fail;
    QUEUE(-1);
    sqe->addr = (uint64_t)(uintptr_t)ts;
    sqe->len = 1;
    sqe->off = opcode == IORING_OP_TIMEOUT ? count : 0;
    sqe->timeout_flags = absolute ? IORING_TIMEOUT_ABS : 0;
    END;
}

static PyObject *op_timeout(RingObject *r, PyObject *a, PyObject *k)
{
    return timeout_op(r, a, k, IORING_OP_TIMEOUT, "d|Ip" TAIL_FMT ":timeout");
}

/* Must directly follow an op submitted with sqe_flags=LINK; cancels it when time runs out. */
static PyObject *op_link_timeout(RingObject *r, PyObject *a, PyObject *k)
{
    return timeout_op(r, a, k, IORING_OP_LINK_TIMEOUT, "d|Ip" TAIL_FMT ":link_timeout");
}

/* async_cancel(target) cancels one request; async_cancel(fd=N) every request on fd;
 * async_cancel(all=True) everything. res is the number cancelled (with fd/all) or 0. */
static PyObject *op_async_cancel(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"target", "fd", "all", TAIL_KW};
    PyObject *target = Py_None, *cb = NULL;
    int fd = -1, all = 0, sqe_flags = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|Oip" TAIL_FMT ":async_cancel", kwlist, &target,
                                     &fd, &all, &cb, &sqe_flags))
        return NULL;
    uint64_t ud = 0;
    unsigned flags = 0;
    if ((target != Py_None) + (fd >= 0) + all != 1) {
        PyErr_SetString(PyExc_ValueError, "give exactly one of target, fd or all=True");
        return NULL;
    }
    if (target != Py_None) {
        if (target_user_data(r, target, &ud) < 0)
            return NULL;
    } else if (fd >= 0) {
        flags = IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL;
    } else {
        flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
    }
    BEGIN(IORING_OP_ASYNC_CANCEL);
    QUEUE(fd);
    sqe->addr = ud;
    sqe->cancel_flags = flags;
    END;
}

static PyObject *op_epoll_wait(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"epfd", "maxevents", TAIL_KW};
    int epfd, maxevents = 64, sqe_flags = 0;
    PyObject *cb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|i" TAIL_FMT ":epoll_wait", kwlist, &epfd,
                                     &maxevents, &cb, &sqe_flags))
        return NULL;
    if (maxevents < 1 || maxevents > 65536) {
        PyErr_SetString(PyExc_ValueError, "maxevents must be 1..65536");
        return NULL;
    }
    BEGIN(SR_OP_EPOLL_WAIT);
    struct epoll_event *ev = request_alloc(req, (size_t)maxevents * sizeof(*ev));
    if (!ev)
        goto fail;
    QUEUE(epfd);
    sqe->addr = (uint64_t)(uintptr_t)ev;
    sqe->len = (uint32_t)maxevents;
    req->finish = finish_epoll_wait;
    END;
}

/* ---- the method table --------------------------------------------------------------------- */

#define OP(name, doc) \
    {#name, (PyCFunction)(void (*)(void))op_##name, METH_VARARGS | METH_KEYWORDS, doc}
#define FAST_OP(name, doc) \
    {#name, (PyCFunction)(void (*)(void))op_##name, METH_FASTCALL | METH_KEYWORDS, doc}

PyMethodDef ring_op_methods[] = {
    OP(nop, "nop() -> Request"),
    FAST_OP(read, "read(fd, buf, offset=-1) -> Request: read into the whole writable buffer"),
    FAST_OP(write, "write(fd, buf, offset=-1) -> Request"),
    OP(read_fixed, "read_fixed(fd, index, offset, length=rest, buf_offset=0): into registered buffer"),
    OP(write_fixed, "write_fixed(fd, index, offset, length=rest, buf_offset=0): from registered buffer"),
    OP(readv, "readv(fd, buffers, offset=-1) -> Request"),
    OP(writev, "writev(fd, buffers, offset=-1) -> Request"),
    OP(read_batch, "read_batch(fd, buf, offsets, size=len(buf)//len(offsets), fixed_index=-1) "
                   "-> Batch\n\nOne read per offset into consecutive size-byte slices of buf; "
                   "offsets may be a list of ints or an array('Q'). With fixed_index, buf lies "
                   "in that registered buffer and READ_FIXED is used."),
    OP(write_batch, "write_batch(fd, buf, offsets, size=len(buf)//len(offsets), fixed_index=-1) "
                    "-> Batch"),
    OP(fsync, "fsync(fd, datasync=False) -> Request"),
    OP(fadvise, "fadvise(fd, offset, length, advice) -> Request"),
    OP(openat, "openat(dirfd, path, flags=O_RDONLY, mode=0o644) -> Request (res: new fd)"),
    OP(openat2, "openat2(dirfd, path, flags=O_RDONLY, mode=0, resolve=0) -> Request (res: new fd)"),
    OP(close_async, "close_async(fd) -> Request: IORING_OP_CLOSE (see also Ring.close_fd)"),
    OP(statx, "statx(dirfd, path, flags=0, mask=BASIC_STATS|BTIME) -> Request (value: Statx)"),
    OP(unlinkat, "unlinkat(dirfd, path, flags=0) -> Request"),
    OP(renameat, "renameat(olddirfd, oldpath, newdirfd, newpath, flags=0) -> Request"),
    OP(mkdirat, "mkdirat(dirfd, path, mode=0o777) -> Request"),
    OP(symlinkat, "symlinkat(target, newdirfd, linkpath) -> Request"),
    OP(linkat, "linkat(olddirfd, oldpath, newdirfd, newpath, flags=0) -> Request"),
    OP(getxattr, "getxattr(path, name, buf, flags=0) -> Request (res: value length)"),
    OP(setxattr, "setxattr(path, name, value, flags=0) -> Request"),
    OP(fgetxattr, "fgetxattr(fd, name, buf, flags=0) -> Request (res: value length)"),
    OP(fsetxattr, "fsetxattr(fd, name, value, flags=0) -> Request"),
    FAST_OP(send, "send(fd, buf, flags=0) -> Request"),
    FAST_OP(recv, "recv(fd, buf, flags=0) -> Request"),
    OP(recv_multishot, "recv_multishot(fd, group, flags=0) -> Request: data lands in buffer ring "
                       "`group`; one completion per arrival (req.buffer_id, req.more)"),
    OP(read_multishot, "read_multishot(fd, group) -> Request: reads land in buffer ring `group`; "
                       "one completion per arrival (req.buffer_id, req.more)"),
    OP(sendmsg, "sendmsg(fd, buffers, flags=0) -> Request"),
    OP(recvmsg, "recvmsg(fd, buffers, flags=0) -> Request (value: msg_flags)"),
    OP(send_zc, "send_zc(fd, buf, flags=0, fixed_index=-1) -> Request\n\nTwo completions: the "
                "send result (req.more: a notification follows), then the notification (req.notif, "
                "req.zc_copied) after which buf is released."),
    OP(sendmsg_zc, "sendmsg_zc(fd, buffers, flags=0) -> Request; completions as send_zc"),
    OP(accept, "accept(fd, flags=SOCK_CLOEXEC, multishot=False) -> Request (res: new fd)"),
    OP(connect, "connect(fd, address) -> Request; address (host, port) or an AF_UNIX path"),
    OP(shutdown, "shutdown(fd, how=SHUT_RDWR) -> Request"),
    OP(splice, "splice(fd_in, off_in, fd_out, off_out, nbytes, flags=0) -> Request (-1: no offset)"),
    OP(tee, "tee(fd_in, fd_out, nbytes, flags=0) -> Request"),
    OP(poll_add, "poll_add(fd, events, multishot=False) -> Request (res: ready events)"),
    OP(poll_remove, "poll_remove(target) -> Request"),
    OP(timeout, "timeout(seconds, count=0, absolute=False) -> Request (res: -ETIME when it fires)"),
    OP(link_timeout, "link_timeout(seconds) -> Request: bounds the previous LINKed op"),
    OP(async_cancel, "async_cancel(target=None, fd=-1, all=False) -> Request"),
    OP(epoll_wait, "epoll_wait(epfd, maxevents=64) -> Request (value: [(fd, events)])"),
    {NULL, NULL, 0, NULL},
};
