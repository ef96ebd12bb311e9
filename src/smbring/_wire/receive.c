/*
 * smbring._wire.ReceiveBuffer: a connection's receive buffer (the state of
 * datapath.Receiver, its subclass) and the serving of the requests it holds whole.
 *
 * The usual request arrives whole in one receive and is answered at once with one small
 * response. In Python the way around the protocol core (take the frame out of the buffer,
 * check its size, note the time, call the core, look at its one effect, send it or hold it
 * back behind the next request) cost about as many bytecodes as the core's own checks and
 * dispatch; here it is one C call per wake-up (serve_frames), which calls the core (a
 * Python callable) for each frame, and answers the plain ECHOs at the buffer's head
 * together (Connection.answer_echoes, itself C). Anything but the plainest outcome goes the
 * Python way it went before: the core's effects to the effect runner's run_now, whose
 * awaitable is handed back, ECHO answers the socket does not take to send_later.
 *
 * Members, read and written from Python as the Receiver's attributes were: _buf (the
 * bytearray), _start and _end (the bytes received and not yet handed out), _in_a_row (pieces
 * handed out since the last wait), fd (the socket's descriptor, -1 once closed). FAIR_BURST
 * is a class attribute.
 *
 * Methods: frame_waiting(), take_frame(), take_answered(answer, command), drained(),
 * recv_now(), on_readable() (the event loop's readiness callback, with the members
 * _waiter, _loop, _watching, serve and answering), and set_server(...), serve_frames(),
 * forget_server(): see each.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "wire.h"

#define FAIR_BURST 32           /* pieces handed out in a row before the loop turns */
#define COMMAND_AT 16           /* a frame's command's low byte, from its NetBIOS prefix */
#define SHORTEST_ANSWERED 68    /* the prefix and an ECHO's header and body */
#define SEND_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL)

typedef struct {
    PyObject_HEAD
    PyObject *buf;              /* a bytearray (set by the subclass) */
    Py_ssize_t start, end, in_a_row;
    int fd;
    /* what serves the frames (set_server, in its order: server_refs; NULL until then) */
    PyObject *handle_frame;     /* Connection.handle_frame */
    PyObject *run_now;          /* EffectRunner.run_now */
    PyObject *flush_then;       /* EffectRunner.flush_then */
    PyObject *on_served;        /* on_served(started) after each frame answered, or None */
    PyObject *answer;           /* Connection.answer_echoes (None: ECHOs go as any frame) */
    PyObject *send_later;       /* send_later(responses, flush_only): the ECHOs' awaited way */
    PyObject *runner;           /* the EffectRunner (its sending_users) */
    PyObject *sender;           /* the Sender (_users, _held, _held_bytes) */
    PyObject *link;             /* the server's Link (busy, last_frame) */
    PyObject *conn;             /* the Connection (limits) */
    PyObject *check_frame_size; /* check_frame_size(conn, size) */
    PyObject *send_type;        /* smb.effects.Send */
    Py_ssize_t smb1_header_size, direct_send_max;
    /* the wait for the socket's readiness (datapath.Receiver._readable, on_readable) */
    PyObject *waiter;           /* _waiter: the future a waiting receive_more awaits, or None */
    PyObject *loop;             /* _loop: the event loop that watches the socket */
    PyObject *serve;            /* serve: what answers frames received while waiting, or None */
    PyObject *answering;        /* what serve returned that waits: (awaitable, started), or None */
    char watching;              /* _watching: the loop watches the socket */
} Buffer;

static PyObject *s_done, *s_set_result, *s_set_exception, *s_remove_reader;
static PyObject *s_busy, *s_last_frame, *s_limits, *s_max_frame, *s_max_frame_unauthenticated,
    *s_sending_users, *s_payload, *s_delivered, *s_message, *s_users, *s_held, *s_held_bytes;

/* The buffer's bytes, checked against the offsets (0, or -1 with an exception). */
static int contents(Buffer *b, unsigned char **data) {
    if (b->buf == NULL || !PyByteArray_CheckExact(b->buf)) {
        PyErr_SetString(PyExc_TypeError, "the receive buffer is not a bytearray");
        return -1;
    }
    if (b->start < 0 || b->start > b->end || b->end > PyByteArray_GET_SIZE(b->buf)) {
        PyErr_SetString(PyExc_ValueError, "the receive buffer's offsets are outside it");
        return -1;
    }
    *data = (unsigned char *)PyByteArray_AS_STRING(b->buf);
    return 0;
}

/* The length of the frame whose NetBIOS prefix is at `start`, or -1 where not all of it (or
   not a session message) has been received. */
static Py_ssize_t whole_frame(const unsigned char *data, Py_ssize_t start, Py_ssize_t end) {
    if (end - start < 4 || data[start] != 0)
        return -1;
    Py_ssize_t size = (Py_ssize_t)data[start + 1] << 16 | data[start + 2] << 8 | data[start + 3];
    return start + 4 + size <= end ? size : -1;
}

static void advance(Buffer *b, Py_ssize_t to) {
    if (to == b->end)
        b->start = b->end = 0;
    else
        b->start = to;
}

static PyObject *buffer_frame_waiting(Buffer *b, PyObject *unused) {
    (void)unused;
    unsigned char *data;
    if (contents(b, &data) < 0)
        return NULL;
    return PyBool_FromLong(whole_frame(data, b->start, b->end) >= 0);
}

static PyObject *buffer_drained(Buffer *b, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(b->start == b->end);
}

/* The next frame in a buffer of its own, or NULL with no exception where there is none. */
static PyObject *next_frame(Buffer *b, unsigned char *data) {
    if (b->in_a_row >= FAIR_BURST - 2)
        return NULL;
    Py_ssize_t size = whole_frame(data, b->start, b->end);
    if (size < 0)
        return NULL;
    PyObject *copy = PyByteArray_FromStringAndSize((const char *)data + b->start + 4, size);
    if (copy == NULL)
        return NULL;
    PyObject *frame = PyMemoryView_FromObject(copy);
    Py_DECREF(copy);
    if (frame == NULL)
        return NULL;
    b->in_a_row += 2;           /* (a prefix and a message, as recv_small counts them) */
    advance(b, b->start + 4 + size);
    return frame;
}

static PyObject *buffer_take_frame(Buffer *b, PyObject *unused) {
    (void)unused;
    unsigned char *data;
    if (contents(b, &data) < 0)
        return NULL;
    PyObject *frame = next_frame(b, data);
    if (frame == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return frame;
}

/* The requests at the head that answer(buf, start, end, most) answers at once, taken out
   of the buffer as take_frame would take them one by one (FAIR_BURST counted): their
   responses, or NULL (an exception, or none answered). */
static PyObject *take_answered(Buffer *b, PyObject *answer, long command) {
    unsigned char *data;
    if (contents(b, &data) < 0)
        return NULL;
    if (b->end - b->start < SHORTEST_ANSWERED || data[b->start + COMMAND_AT] != command)
        return NULL;
    Py_ssize_t most = (FAIR_BURST - 1 - b->in_a_row) >> 1;     /* what take_frame would still give */
    if (most <= 0)
        return NULL;
    PyObject *done = PyObject_CallFunction(answer, "Onnn", b->buf, b->start, b->end, most);
    if (done == NULL)
        return NULL;
    if (done == Py_None) {
        Py_DECREF(done);
        return NULL;
    }
    Py_ssize_t to, count;
    PyObject *responses;
    if (!PyTuple_Check(done) || !PyArg_ParseTuple(done, "nnO", &to, &count, &responses)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "take_answered: answer gave no (end, count, responses)");
        Py_DECREF(done);
        return NULL;
    }
    if (to <= b->start || to > b->end || count <= 0 || count > most) {
        PyErr_SetString(PyExc_ValueError, "take_answered: answer's end or count outside the buffer");
        Py_DECREF(done);
        return NULL;
    }
    b->in_a_row += count << 1;
    advance(b, to);
    Py_INCREF(responses);
    Py_DECREF(done);
    return responses;
}

static PyObject *buffer_take_answered(Buffer *b, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "take_answered(answer, command)");
        return NULL;
    }
    long command = PyLong_AsLong(args[1]);
    if (command == -1 && PyErr_Occurred())
        return NULL;
    PyObject *responses = take_answered(b, args[0], command);
    if (responses == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return responses;
}

/* One non-blocking recv into the whole buffer: the bytes received (0: the peer's end), or
   -1 with an exception (BlockingIOError where nothing is there). */
static Py_ssize_t receive(Buffer *b) {
    unsigned char *data;
    if (contents(b, &data) < 0)
        return -1;
    Py_ssize_t room = PyByteArray_GET_SIZE(b->buf);
    ssize_t got;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        got = recv(b->fd, data, (size_t)room, MSG_DONTWAIT);
        Py_END_ALLOW_THREADS
        if (got >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    if (got < 0) {
        PyErr_SetFromErrno(PyExc_OSError);      /* (BlockingIOError for EAGAIN) */
        return -1;
    }
    b->start = 0;
    b->end = got;
    return got;
}

static PyObject *buffer_recv_now(Buffer *b, PyObject *unused) {
    (void)unused;
    Py_ssize_t got = receive(b);
    return got < 0 ? NULL : PyLong_FromSsize_t(got);
}

/* -- waiting for the socket --------------------------------------------------------------- */

/* `waiter` (the one on_readable found) woken with waiter.<method>(arg), the receive
   buffer's forgotten first (None). */
static PyObject *wake(Buffer *b, PyObject *waiter, PyObject *method, PyObject *arg) {
    Py_XSETREF(b->waiter, Py_NewRef(Py_None));
    PyObject *r = PyObject_CallMethodOneArg(waiter, method, arg);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* `waiter` woken with the exception being raised (an Exception: others propagate). */
static PyObject *wake_failed(Buffer *b, PyObject *waiter) {
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL)
        PyException_SetTraceback(value, traceback);
    PyObject *r = wake(b, waiter, s_set_exception, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return r;
}

/* What on_readable does for `waiter`, a receive waiting (see on_readable). */
static PyObject *readable_for(Buffer *b, PyObject *waiter) {
    if (b->serve == NULL || b->serve == Py_None)
        return wake(b, waiter, s_set_result, Py_False);
    Py_ssize_t got = receive(b);
    if (got < 0) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            Py_RETURN_NONE;         /* woken for nothing: still waiting */
        }
        return PyErr_ExceptionMatches(PyExc_OSError) ? wake_failed(b, waiter) : NULL;
    }
    if (got == 0) {
        PyObject *reset = PyObject_CallFunction(PyExc_ConnectionResetError, "is", ECONNRESET,
                                                "peer closed mid-payload");
        if (reset == NULL)
            return NULL;
        PyObject *r = wake(b, waiter, s_set_exception, reset);
        Py_DECREF(reset);
        return r;
    }
    b->in_a_row = 0;                /* (the loop has turned since the last wait) */
    PyObject *serve = Py_NewRef(b->serve);      /* (held: serve may forget itself, close()) */
    PyObject *more = PyObject_CallNoArgs(serve);
    Py_DECREF(serve);
    if (more == NULL)
        return wake_failed(b, waiter);
    if (more == Py_False) {
        Py_DECREF(more);
        Py_RETURN_NONE;
    }
    if (more != Py_True) {
        if (!PyTuple_Check(more) || PyTuple_GET_SIZE(more) != 2) {
            Py_DECREF(more);
            PyErr_SetString(PyExc_TypeError, "on_readable: serve gave neither a bool nor (awaitable, started)");
            return wake_failed(b, waiter);
        }
        Py_XSETREF(b->answering, more);     /* (its reference) */
        more = NULL;
    }
    Py_XDECREF(more);
    return wake(b, waiter, s_set_result, Py_True);
}

/* on_readable(): the event loop's readiness callback (datapath.Receiver._readable watches
   the socket with it). Nobody waiting: the watch stops (a level-triggered watch would fire
   every turn while the connection is busy with what it received). Without `serve`: the
   waiter is woken (False: it receives). With it: what has arrived is received and served
   here, and the waiter is woken (True: received already) only where `serve` says the rest
   goes the awaited way: True, or (awaitable, started), kept in `answering` for the waiter;
   the usual request is answered without a future, a task step or another turn of the loop.
   An error of the receive or of `serve` is raised where the waiter waits; a peer's end is
   ConnectionResetError there. */
static PyObject *buffer_on_readable(Buffer *b, PyObject *unused) {
    (void)unused;
    PyObject *waiter = b->waiter;
    if (waiter != NULL && waiter != Py_None) {
        Py_INCREF(waiter);          /* (serve may forget it: it is woken all the same) */
        PyObject *done = PyObject_CallMethodNoArgs(waiter, s_done);
        if (done == NULL) {
            Py_DECREF(waiter);
            return NULL;
        }
        int waits = done == Py_False;
        Py_DECREF(done);
        PyObject *r = waits ? readable_for(b, waiter) : NULL;
        Py_DECREF(waiter);
        if (waits)
            return r;
    }
    Py_XSETREF(b->waiter, Py_NewRef(Py_None));
    if (b->loop == NULL || b->loop == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "on_readable: no event loop watches the socket");
        return NULL;
    }
    PyObject *fd = PyLong_FromLong(b->fd);
    if (fd == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(b->loop, s_remove_reader, fd);
    Py_DECREF(fd);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    b->watching = 0;
    Py_RETURN_NONE;
}

/* -- serving ------------------------------------------------------------------------------ */

/* The server's references, in set_server's order: set, cleared and visited from this list. */
static const size_t server_refs[] = {
    offsetof(Buffer, handle_frame), offsetof(Buffer, run_now), offsetof(Buffer, flush_then),
    offsetof(Buffer, on_served), offsetof(Buffer, answer), offsetof(Buffer, send_later),
    offsetof(Buffer, runner), offsetof(Buffer, sender), offsetof(Buffer, link), offsetof(Buffer, conn),
    offsetof(Buffer, check_frame_size), offsetof(Buffer, send_type),
};
#define SERVER_REFS (sizeof server_refs / sizeof server_refs[0])
#define SERVER_REF(b, i) (*(PyObject **)((char *)(b) + server_refs[i]))

static PyObject *buffer_set_server(Buffer *b, PyObject *args) {
    PyObject *given[SERVER_REFS];
    Py_ssize_t smb1_header_size, direct_send_max;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOO!nn:set_server", &given[0], &given[1], &given[2],
                          &given[3], &given[4], &given[5], &given[6], &given[7], &given[8],
                          &given[9], &given[10], &PyType_Type, &given[11], &smb1_header_size,
                          &direct_send_max))
        return NULL;
    for (size_t i = 0; i < SERVER_REFS; i++) {
        PyObject *old = SERVER_REF(b, i);
        Py_INCREF(given[i]);
        SERVER_REF(b, i) = given[i];
        Py_XDECREF(old);
    }
    b->smb1_header_size = smb1_header_size;
    b->direct_send_max = direct_send_max;
    Py_RETURN_NONE;
}

static int clear_server(Buffer *b) {
    for (size_t i = 0; i < SERVER_REFS; i++)
        Py_CLEAR(SERVER_REF(b, i));
    return 0;
}

static int clear_wait(Buffer *b) {
    Py_CLEAR(b->waiter);
    Py_CLEAR(b->loop);
    Py_CLEAR(b->serve);
    Py_CLEAR(b->answering);
    return 0;
}

static PyObject *buffer_forget_server(Buffer *b, PyObject *unused) {
    (void)unused;
    clear_server(b);
    Py_RETURN_NONE;
}

/* An attribute that is a non-negative integer (an int's truth for flags); -1 with an exception. */
static Py_ssize_t attr_size(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    Py_ssize_t n = PyLong_Check(v) ? PyLong_AsSsize_t(v) : (Py_ssize_t)PyObject_IsTrue(v);
    Py_DECREF(v);
    if (n < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a negative count");
    return n;
}

static int set_attr_size(PyObject *o, PyObject *name, Py_ssize_t n) {
    PyObject *v = PyLong_FromSsize_t(n);
    if (v == NULL)
        return -1;
    int r = PyObject_SetAttr(o, name, v);
    Py_DECREF(v);
    return r;
}

/* Whether the attribute is None (1) or not (0); -1 with an exception. */
static int attr_is_none(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    Py_DECREF(v);
    return v == Py_None;
}

/* Whether the sender holds responses back (Sender.holding); -1 with an exception. */
static int holding(Buffer *b) {
    PyObject *held = PyObject_GetAttr(b->sender, s_held);
    if (held == NULL)
        return -1;
    int r = PyObject_IsTrue(held);
    Py_DECREF(held);
    return r;
}

/* What serve_frames returns once nothing more is answered now (Receiver.serve's answer):
   True where a frame is not all received (or FAIR_BURST is up) or responses are held back. */
static PyObject *rest_waits(Buffer *b) {
    if (b->start != b->end)
        Py_RETURN_TRUE;
    int held = holding(b);
    return held < 0 ? NULL : PyBool_FromLong(held);
}

static PyObject *monotonic(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);       /* (time.monotonic's clock) */
    return PyFloat_FromDouble((double)now.tv_sec + (double)now.tv_nsec * 1e-9);
}

/* One sendmsg of `n` buffers, MSG_DONTWAIT: what it sent (0 where the socket took nothing),
   or -1 with an exception. */
static Py_ssize_t send_buffers(int fd, Py_buffer *views, Py_ssize_t n) {
    struct iovec stack[8];
    struct iovec *iov = n <= 8 ? stack : PyMem_New(struct iovec, n);
    if (iov == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        iov[i].iov_base = views[i].buf;
        iov[i].iov_len = (size_t)views[i].len;
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t sent;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        sent = sendmsg(fd, &msg, SEND_FLAGS);
        Py_END_ALLOW_THREADS
        if (sent >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            sent = -2;
            break;
        }
    }
    if (iov != stack)
        PyMem_Free(iov);
    if (sent == -2)
        return -1;
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return sent;
}

/* The bytes of `n` buffers from byte `from` on, as one bytes object. */
static PyObject *joined(Py_buffer *views, Py_ssize_t n, Py_ssize_t from) {
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        total += views[i].len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total - from);
    if (out == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t skip = from < views[i].len ? from : views[i].len;
        memcpy(p, (char *)views[i].buf + skip, (size_t)(views[i].len - skip));
        p += views[i].len - skip;
        from -= skip;
    }
    return out;
}

enum { NOT_SENT = 0, SENT = 1, REST_HELD = 2 };

/* A small response (the `n_own` buffers of `own`, NetBIOS prefix included) sent as
   Sender.send_small sends it: SENT where sent, or held back while the next request is
   received already; REST_HELD where the socket took part of it (the rest is held back, the
   caller awaits a flush); NOT_SENT where nothing was done (another send is under way, or it
   is too large: it goes the awaited way); -1 with an exception. */
static int send_small(Buffer *b, Py_buffer *own, Py_ssize_t n_own, const unsigned char *data) {
    Py_ssize_t busy = attr_size(b->sender, s_users);
    if (busy != 0)
        return busy < 0 ? -1 : NOT_SENT;
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < n_own; i++)
        size += own[i].len;
    if (size > b->direct_send_max)
        return NOT_SENT;
    PyObject *held = PyObject_GetAttr(b->sender, s_held);
    if (held == NULL)
        return -1;
    int result = -1;
    Py_ssize_t n_held = 0, held_views = 0;
    Py_buffer *views = NULL;    /* the held responses' (taken where they are sent), then own's */
    if (!PyList_CheckExact(held)) {
        PyErr_SetString(PyExc_TypeError, "the sender's held responses are not a list");
        goto done;
    }
    n_held = PyList_GET_SIZE(held);
    Py_ssize_t total = size;
    if (n_held) {
        Py_ssize_t held_bytes = attr_size(b->sender, s_held_bytes);
        if (held_bytes < 0)
            goto done;
        total += held_bytes;
        if (total > b->direct_send_max) {
            result = NOT_SENT;
            goto done;
        }
    }
    if (whole_frame(data, b->start, b->end) >= 0) {
        /* the next request is in: held back (a copy: its buffers may be reused), to leave
           with the response that finds none waiting */
        PyObject *copy = joined(own, n_own, 0);
        if (copy == NULL)
            goto done;
        int r = PyList_Append(held, copy);
        Py_DECREF(copy);
        if (r < 0 || set_attr_size(b->sender, s_held_bytes, total) < 0)
            goto done;
        result = SENT;
        goto done;
    }
    views = PyMem_New(Py_buffer, n_held + n_own);
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held_views < n_held; held_views++)
        if (PyObject_GetBuffer(PyList_GET_ITEM(held, held_views), &views[held_views], PyBUF_SIMPLE) < 0)
            goto done;
    memcpy(views + n_held, own, sizeof(Py_buffer) * (size_t)n_own);    /* (released by the caller) */
    Py_ssize_t all = 0;         /* (what the held responses hold: _held_bytes, as counted) */
    for (Py_ssize_t i = 0; i < n_held + n_own; i++)
        all += views[i].len;
    Py_ssize_t sent = send_buffers(b->fd, views, n_held + n_own);
    if (sent < 0)
        goto done;
    if (n_held) {
        PyObject *none_held = PyList_New(0);
        if (none_held == NULL)
            goto done;
        int r = PyObject_SetAttr(b->sender, s_held, none_held);
        Py_DECREF(none_held);
        if (r < 0 || set_attr_size(b->sender, s_held_bytes, 0) < 0)
            goto done;
    }
    if (sent == all) {
        result = SENT;
        goto done;
    }
    PyObject *rest = joined(views, n_held + n_own, sent);
    if (rest == NULL)
        goto done;
    PyObject *rest_held = PyList_New(1);
    if (rest_held == NULL) {
        Py_DECREF(rest);
        goto done;
    }
    PyList_SET_ITEM(rest_held, 0, rest);
    int r = PyObject_SetAttr(b->sender, s_held, rest_held);
    Py_DECREF(rest_held);
    if (r < 0 || set_attr_size(b->sender, s_held_bytes, all - sent) < 0)
        goto done;
    result = REST_HELD;
done:
    if (views != NULL) {
        for (Py_ssize_t i = 0; i < held_views; i++)
            PyBuffer_Release(&views[i]);
        PyMem_Free(views);
    }
    Py_DECREF(held);
    return result;
}

/* A frame's effects carried out where they are one Send of a message alone, as
   EffectRunner.run_now carries it out (send_small's outcomes); NOT_SENT where nothing was
   done (they go run_now's way); -1 with an exception. */
static int send_plain(Buffer *b, PyObject *todo, const unsigned char *data) {
    if (!PyList_CheckExact(todo) || PyList_GET_SIZE(todo) != 1)
        return NOT_SENT;
    PyObject *effect = PyList_GET_ITEM(todo, 0);
    if ((PyObject *)Py_TYPE(effect) != b->send_type)
        return NOT_SENT;
    Py_ssize_t busy = attr_size(b->runner, s_sending_users);
    if (busy != 0)
        return busy < 0 ? -1 : NOT_SENT;
    int plain = attr_is_none(effect, s_payload);        /* no file range to send */
    if (plain > 0)
        plain = attr_is_none(effect, s_delivered);      /* nobody waits for its delivery */
    if (plain <= 0)
        return plain < 0 ? -1 : NOT_SENT;
    PyObject *message = PyObject_GetAttr(effect, s_message);
    if (message == NULL)
        return -1;
    Py_buffer own[2];
    unsigned char prefix[4];
    if (PyObject_GetBuffer(message, &own[1], PyBUF_SIMPLE) < 0) {
        Py_DECREF(message);
        return -1;
    }
    int result = NOT_SENT;
    Py_ssize_t length = own[1].len;
    if (length <= 0xFFFFFF) {
        prefix[0] = 0;
        prefix[1] = (unsigned char)(length >> 16);
        prefix[2] = (unsigned char)(length >> 8);
        prefix[3] = (unsigned char)length;
        PyBuffer_FillInfo(&own[0], NULL, prefix, 4, 1, PyBUF_SIMPLE);
        result = send_small(b, own, 2, data);
    }
    PyBuffer_Release(&own[1]);
    Py_DECREF(message);
    return result;
}

/* The plain ECHOs at the buffer's head answered (`answer`: Connection.answer_echoes, as
   take_answered asks it) and sent as Server.handle sent them: 1 where answered and sent
   (or held back), 0 where none was answered (nothing changed), 2 where the answers wait
   (*pending: send_later's awaitable, *started: when), -1 with an exception. */
static int answer_head(Buffer *b, const unsigned char *data, PyObject **pending, PyObject **started) {
    if (b->answer == Py_None || b->end - b->start < SHORTEST_ANSWERED || data[b->start + COMMAND_AT] != ECHO)
        return 0;
    Py_ssize_t busy = attr_size(b->runner, s_sending_users);
    if (busy != 0)
        return busy < 0 ? -1 : 0;     /* (responses waiting to be sent go first: the frame's way) */
    PyObject *responses = take_answered(b, b->answer, ECHO);
    if (responses == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int result = -1;
    PyObject *now = monotonic();
    if (now == NULL || PyObject_SetAttr(b->link, s_last_frame, now) < 0)
        goto done;
    Py_buffer own;
    if (PyObject_GetBuffer(responses, &own, PyBUF_SIMPLE) < 0)
        goto done;
    unsigned char *fresh;
    if (contents(b, &fresh) < 0) {
        PyBuffer_Release(&own);
        goto done;
    }
    int sent = send_small(b, &own, 1, fresh);
    PyBuffer_Release(&own);
    if (sent < 0)
        goto done;
    if (sent == SENT) {
        result = 1;
        goto done;
    }
    /* the rest the awaited way (a graceful stop waits for it: the link is busy) */
    if (PyObject_SetAttr(b->link, s_busy, Py_True) < 0)
        goto done;
    *pending = PyObject_CallFunctionObjArgs(b->send_later, responses, sent == REST_HELD ? Py_True : Py_False, NULL);
    if (*pending == NULL)
        goto done;
    *started = now;
    now = NULL;
    result = 2;
done:
    Py_XDECREF(now);
    Py_DECREF(responses);
    return result;
}

/* The frame's size within the connection's bounds, as Server.handle's `begin` checks it
   (the usual frame without a call; else check_frame_size raises or passes it). */
static int size_checked(Buffer *b, Py_ssize_t size) {
    PyObject *limits = PyObject_GetAttr(b->conn, s_limits);
    if (limits == NULL)
        return -1;
    Py_ssize_t most_before_logon = attr_size(limits, s_max_frame_unauthenticated);
    Py_ssize_t most = most_before_logon < 0 ? -1 : attr_size(limits, s_max_frame);
    Py_DECREF(limits);
    if (most < 0)
        return -1;
    if (b->smb1_header_size <= size && size <= most_before_logon && size <= most)
        return 0;
    PyObject *r = PyObject_CallFunction(b->check_frame_size, "On", b->conn, size);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* One frame answered as Server.handle's `begin` answers it: the link busy, the frame's size
   checked, the link's last_frame and the frame's start noted, the connection's handle_frame
   called, its effects sent where they are one plain Send (send_plain), else given to
   run_now; then (none waiting) the link idle and on_served(started) called. NULL with an
   exception; None where done; else (awaitable, started), the link still busy. */
static PyObject *answer_frame(Buffer *b, PyObject *frame) {
    if (PyObject_SetAttr(b->link, s_busy, Py_True) < 0 || size_checked(b, PyObject_Length(frame)) < 0)
        return NULL;
    PyObject *started = monotonic();
    if (started == NULL)
        return NULL;
    PyObject *out = NULL, *pending = NULL, *todo = NULL;
    unsigned char *data;
    if (PyObject_SetAttr(b->link, s_last_frame, started) < 0)
        goto done;
    todo = PyObject_CallOneArg(b->handle_frame, frame);
    if (todo == NULL || contents(b, &data) < 0)
        goto done;
    int sent = send_plain(b, todo, data);
    if (sent < 0)
        goto done;
    if (sent == NOT_SENT)
        pending = PyObject_CallOneArg(b->run_now, todo);
    else if (sent == REST_HELD) {
        PyObject *nothing = PyList_New(0);
        pending = nothing == NULL ? NULL : PyObject_CallOneArg(b->flush_then, nothing);
        Py_XDECREF(nothing);
    } else {
        pending = Py_None;
        Py_INCREF(pending);
    }
    if (pending == NULL)
        goto done;
    if (pending != Py_None) {
        out = PyTuple_Pack(2, pending, started);
        goto done;
    }
    if (PyObject_SetAttr(b->link, s_busy, Py_False) < 0)
        goto done;
    if (b->on_served != Py_None) {
        PyObject *r = PyObject_CallOneArg(b->on_served, started);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    out = Py_None;
    Py_INCREF(out);
done:
    Py_XDECREF(pending);
    Py_XDECREF(todo);
    Py_DECREF(started);
    return out;
}

/* serve_frames() -> bool | (awaitable, started)

   Answers what the buffer holds whole, as Server.handle answered it frame by frame: the
   plain ECHOs at its head together (answer_head), any other frame alone (answer_frame).
   Returns (awaitable, started) where an answer waits (the caller awaits it, then `finish`es
   the frame); else what Receiver.serve returns: True where the rest goes the awaited way (a
   frame not all received, FAIR_BURST pieces up, responses held back), False where all is
   answered and the wait goes on. */
static PyObject *buffer_serve_frames(Buffer *b, PyObject *unused) {
    (void)unused;
    if (b->handle_frame == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "serve_frames: no server set");
        return NULL;
    }
    for (;;) {
        unsigned char *data;
        if (contents(b, &data) < 0)
            return NULL;
        PyObject *pending = NULL, *started = NULL;
        int answered = answer_head(b, data, &pending, &started);
        if (answered < 0)
            return NULL;
        if (answered == 2) {
            PyObject *out = PyTuple_Pack(2, pending, started);
            Py_DECREF(pending);
            Py_DECREF(started);
            return out;
        }
        if (answered == 0) {
            PyObject *frame = next_frame(b, data);
            if (frame == NULL)
                return PyErr_Occurred() ? NULL : rest_waits(b);
            PyObject *done = answer_frame(b, frame);
            Py_DECREF(frame);
            if (done != Py_None)
                return done;
            Py_DECREF(done);
        }
        if (b->start == b->end)
            return rest_waits(b);
    }
}

/* -- the type ----------------------------------------------------------------------------- */

static int buffer_init(Buffer *b, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    b->fd = -1;
    return 0;
}

static int buffer_traverse(Buffer *b, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(b));
    Py_VISIT(b->buf);
    for (size_t i = 0; i < SERVER_REFS; i++)
        Py_VISIT(SERVER_REF(b, i));
    Py_VISIT(b->waiter);
    Py_VISIT(b->loop);
    Py_VISIT(b->serve);
    Py_VISIT(b->answering);
    return 0;
}

static int buffer_clear(Buffer *b) {
    Py_CLEAR(b->buf);
    clear_wait(b);
    return clear_server(b);
}

static void buffer_dealloc(Buffer *b) {
    PyTypeObject *type = Py_TYPE(b);
    PyObject_GC_UnTrack(b);
    buffer_clear(b);
    type->tp_free((PyObject *)b);
    Py_DECREF(type);
}

static PyMethodDef buffer_methods[] = {
    {"frame_waiting", (PyCFunction)buffer_frame_waiting, METH_NOARGS,
     "Whether a whole request (NetBIOS prefix and message) has been received already."},
    {"take_frame", (PyCFunction)buffer_take_frame, METH_NOARGS,
     "The next request's message, in a buffer of its own, when all of it has been received and "
     "FAIR_BURST pieces in a row are not up; else None."},
    {"take_answered", (PyCFunction)(void (*)(void))buffer_take_answered, METH_FASTCALL,
     "take_answered(answer, command): the requests at the buffer's head that answer(buf, start, "
     "end, most) answers at once, taken out (asked only where the first one's command's low byte "
     "is `command`); None when it answered none, else their responses."},
    {"drained", (PyCFunction)buffer_drained, METH_NOARGS, "Whether nothing received is left to hand out."},
    {"recv_now", (PyCFunction)buffer_recv_now, METH_NOARGS,
     "One non-blocking recv into the whole buffer (what it held is handed out already): the "
     "bytes received (0: the peer's end); OSError (BlockingIOError: nothing there)."},
    {"set_server", (PyCFunction)buffer_set_server, METH_VARARGS,
     "set_server(handle_frame, run_now, flush_then, on_served, answer, send_later, runner, sender, "
     "link, conn, check_frame_size, send_type, smb1_header_size, direct_send_max): what "
     "serve_frames uses."},
    {"forget_server", (PyCFunction)buffer_forget_server, METH_NOARGS,
     "Drops what set_server gave (the connection is gone)."},
    {"on_readable", (PyCFunction)buffer_on_readable, METH_NOARGS,
     "The event loop's readiness callback for the socket: wakes or serves the waiting receive "
     "(see receive.c)."},
    {"serve_frames", (PyCFunction)buffer_serve_frames, METH_NOARGS,
     "serve_frames() -> bool | (awaitable, started): the frames received whole, answered "
     "(see receive.c)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef buffer_members[] = {
    {"_buf", T_OBJECT, offsetof(Buffer, buf), 0, "the receive buffer (a bytearray)"},
    {"_start", T_PYSSIZET, offsetof(Buffer, start), 0, "the first byte received and not handed out"},
    {"_end", T_PYSSIZET, offsetof(Buffer, end), 0, "the end of the bytes received"},
    {"_in_a_row", T_PYSSIZET, offsetof(Buffer, in_a_row), 0, "pieces handed out since the last wait"},
    {"fd", T_INT, offsetof(Buffer, fd), 0, "the socket's descriptor (-1: none)"},
    {"_waiter", T_OBJECT, offsetof(Buffer, waiter), 0, "the future a waiting receive awaits, or None"},
    {"_loop", T_OBJECT, offsetof(Buffer, loop), 0, "the event loop that watches the socket"},
    {"_watching", T_BOOL, offsetof(Buffer, watching), 0, "whether the loop watches the socket"},
    {"serve", T_OBJECT, offsetof(Buffer, serve), 0,
     "serve() -> bool | (awaitable, started): answers frames received while waiting, or None"},
    {"answering", T_OBJECT, offsetof(Buffer, answering), 0,
     "what serve gave that waits, (awaitable, started), for the woken receive; or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot buffer_slots[] = {
    {Py_tp_doc, "A connection's receive buffer and the serving of the requests it holds whole "
                "(datapath.Receiver)"},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, buffer_init},
    {Py_tp_dealloc, buffer_dealloc},
    {Py_tp_traverse, buffer_traverse},
    {Py_tp_clear, buffer_clear},
    {Py_tp_methods, buffer_methods},
    {Py_tp_members, buffer_members},
    {0, NULL},
};

static PyType_Spec buffer_spec = {
    .name = "smbring._wire.ReceiveBuffer",
    .basicsize = sizeof(Buffer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = buffer_slots,
};

static int intern(PyObject **slot, const char *name) {
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

PyObject *wire_receive_buffer_type(void) {
    if (intern(&s_done, "done") < 0 || intern(&s_set_result, "set_result") < 0 ||
            intern(&s_set_exception, "set_exception") < 0 || intern(&s_remove_reader, "remove_reader") < 0 ||
            intern(&s_busy, "busy") < 0 || intern(&s_last_frame, "last_frame") < 0 ||
            intern(&s_limits, "limits") < 0 || intern(&s_max_frame, "max_frame") < 0 ||
            intern(&s_max_frame_unauthenticated, "max_frame_unauthenticated") < 0 ||
            intern(&s_sending_users, "sending_users") < 0 || intern(&s_payload, "payload") < 0 ||
            intern(&s_delivered, "delivered") < 0 || intern(&s_message, "message") < 0 ||
            intern(&s_users, "_users") < 0 || intern(&s_held, "_held") < 0 ||
            intern(&s_held_bytes, "_held_bytes") < 0)
        return NULL;
    PyObject *type = PyType_FromSpec(&buffer_spec);
    if (type == NULL)
        return NULL;
    PyObject *burst = PyLong_FromLong(FAIR_BURST);
    if (burst == NULL || PyObject_SetAttrString(type, "FAIR_BURST", burst) < 0) {
        Py_XDECREF(burst);
        Py_DECREF(type);
        return NULL;
    }
    Py_DECREF(burst);
    return type;
}
