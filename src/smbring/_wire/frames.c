/*
 * smbring._wire.FrameHandler: Connection.handle_frame, the core's entry for every frame, with
 * the usual request's whole way through it in C: its admission (admit.c), its handler's call,
 * a failure answered (Connection._answer_failure), and an answer in memory made into the one
 * Send it is (HeaderCodec.answer). In Python that way was about seventy bytecodes around the
 * handler, per request; the protocol logic itself stays Python (the handlers, the failure's
 * status, any other answer and any other frame).
 *
 *   FrameHandler(admit, answer, send_class, new_object) -> handler
 *       admit: smb.connection's _admit (Admission.admit); answer: HEADER_CODEC.answer;
 *       send_class, new_object: smb.effects.Send and object.__new__ (a Send with its
 *       defaults, its message set).
 *   handler(conn, frame, sealed_by=None) -> effects
 *       A method descriptor, set as Connection.handle_frame: `conn.handle_frame(frame)`.
 *       As Connection.handle_frame_in_python, step for step: a frame the admission leaves
 *       (or one a session sealed: sealed_by) is conn._frame_not_admitted(frame, sealed_by);
 *       an admitted one's handler(conn, hdr, frame, rhdr, chain) answers (body, fid), fid
 *       (not None) becomes chain.fid; an exception that is an Exception but not a
 *       ConnectionError is answered by conn._answer_failure(e, hdr, rhdr, chain) -> (rhdr,
 *       body); a body of bytes, bytearray or memoryview whose rhdr.signer is None, which
 *       answer() packs, is one Send after conn.outbox's effects (the outbox emptied); any
 *       other answer is conn._answered(hdr, rhdr, body, False, None, hdr is a WRITE).
 *
 * It keeps no state between calls beyond what it was given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "wire.h"

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *admit;
    PyObject *answer;
    PyObject *send_class;
    PyObject *new_object;
} FrameHandler;

enum {
    N_NOT_ADMITTED, N_ANSWER_FAILURE, N_ANSWERED, N_OUTBOX, N_SIGNER, N_FID, N_COMMAND, N_MESSAGE,
    N_SEALED_BY, N_NAMES
};
static const char *const NAMES[N_NAMES] = {
    "_frame_not_admitted", "_answer_failure", "_answered", "outbox", "signer", "fid", "command",
    "message", "sealed_by",
};
static PyObject *names[N_NAMES];

/* (rhdr, body) or (body, fid) out of a handler's or _answer_failure's answer, as Python's
   `a, b = answer` unpacks it: new references, 0; or -1 with an exception */
static int unpack_two(PyObject *answer, PyObject **first, PyObject **second) {
    PyObject *items = PyTuple_CheckExact(answer) ? Py_NewRef(answer) : PySequence_Tuple(answer);
    if (items == NULL)
        return -1;
    if (PyTuple_GET_SIZE(items) != 2) {
        PyErr_Format(PyExc_ValueError, "expected 2 values to unpack, got %zd", PyTuple_GET_SIZE(items));
        Py_DECREF(items);
        return -1;
    }
    *first = Py_NewRef(PyTuple_GET_ITEM(items, 0));
    *second = Py_NewRef(PyTuple_GET_ITEM(items, 1));
    Py_DECREF(items);
    return 0;
}

/* The raised exception, where `except Exception as e` (not ConnectionError) would catch it:
   1 with *caught (a new reference, its traceback attached) and no exception set; 0 (left
   raised) where it would not */
static int catch_exception(PyObject **caught) {
    if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_ConnectionError))
        return 0;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    *caught = value;
    return 1;
}

/* answer's message as one Send after conn.outbox's effects: the effects list (a new
   reference), or NULL with an exception */
static PyObject *sent(FrameHandler *self, PyObject *conn, PyObject *message) {
    PyObject *send = PyObject_CallOneArg(self->new_object, self->send_class);
    if (send == NULL || PyObject_SetAttr(send, names[N_MESSAGE], message) < 0) {
        Py_XDECREF(send);
        return NULL;
    }
    PyObject *out = PyObject_GetAttr(conn, names[N_OUTBOX]);
    int waiting = out == NULL ? -1 : PyObject_IsTrue(out);
    PyObject *effects = NULL;
    if (waiting > 0 && !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "handle_frame: the connection's outbox is not a list");
    } else if (waiting > 0) {
        /* (what the outbox held goes first, in its own list; the connection's is a new one) */
        PyObject *empty = PyList_New(0);
        if (empty != NULL && PyObject_SetAttr(conn, names[N_OUTBOX], empty) == 0 && PyList_Append(out, send) == 0)
            effects = Py_NewRef(out);
        Py_XDECREF(empty);
    } else if (waiting == 0) {
        effects = PyList_New(1);
        if (effects != NULL)
            PyList_SET_ITEM(effects, 0, Py_NewRef(send));
    }
    Py_XDECREF(out);
    Py_DECREF(send);
    return effects;
}

/* An answer's effects: one Send where it is the usual one, else conn._answered's */
static PyObject *answered(FrameHandler *self, PyObject *conn, PyObject *hdr, PyObject *rhdr, PyObject *body) {
    if (PyBytes_CheckExact(body) || PyByteArray_CheckExact(body) || PyMemoryView_Check(body)) {
        PyObject *signer = PyObject_GetAttr(rhdr, names[N_SIGNER]);
        if (signer == NULL)
            return NULL;
        int unsigned_answer = signer == Py_None;
        Py_DECREF(signer);
        if (unsigned_answer) {
            PyObject *message = PyObject_Vectorcall(self->answer, (PyObject *[]){hdr, rhdr, body}, 3, NULL);
            if (message == NULL)
                return NULL;
            if (message != Py_None) {
                PyObject *effects = sent(self, conn, message);
                Py_DECREF(message);
                return effects;
            }
            Py_DECREF(message);
        }
    }
    PyObject *command = PyObject_GetAttr(hdr, names[N_COMMAND]);
    if (command == NULL)
        return NULL;
    long c = PyLong_AsLong(command);
    Py_DECREF(command);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    PyObject *args[] = {conn, hdr, rhdr, body, Py_False, Py_None, c == WRITE ? Py_True : Py_False};
    return PyObject_VectorcallMethod(names[N_ANSWERED], args, 7, NULL);
}

/* The admitted request (hdr, rhdr, chain, handler) handled and answered */
static PyObject *handled(FrameHandler *self, PyObject *conn, PyObject *frame, PyObject *admitted) {
    if (!PyTuple_CheckExact(admitted) || PyTuple_GET_SIZE(admitted) != 4) {
        PyErr_SetString(PyExc_TypeError, "handle_frame: admit() answered no (hdr, rhdr, chain, handler)");
        return NULL;
    }
    PyObject *hdr = PyTuple_GET_ITEM(admitted, 0), *chain = PyTuple_GET_ITEM(admitted, 2);
    PyObject *handler = PyTuple_GET_ITEM(admitted, 3);
    PyObject *rhdr = Py_NewRef(PyTuple_GET_ITEM(admitted, 1));
    PyObject *body = NULL, *fid = NULL, *effects = NULL;
    PyObject *answer = PyObject_Vectorcall(handler, (PyObject *[]){conn, hdr, frame, rhdr, chain}, 5, NULL);
    int ok = answer != NULL && unpack_two(answer, &body, &fid) == 0 &&
             (fid == Py_None || PyObject_SetAttr(chain, names[N_FID], fid) == 0);
    Py_XDECREF(answer);
    Py_XDECREF(fid);
    if (!ok) {
        Py_CLEAR(body);
        PyObject *e;
        if (!catch_exception(&e))
            goto done;
        PyObject *failure = PyObject_VectorcallMethod(names[N_ANSWER_FAILURE], (PyObject *[]){conn, e, hdr, rhdr, chain},
                                                      5, NULL);
        Py_DECREF(e);
        if (failure == NULL)
            goto done;
        Py_CLEAR(rhdr);
        ok = unpack_two(failure, &rhdr, &body) == 0;
        Py_DECREF(failure);
        if (!ok)
            goto done;
    }
    effects = answered(self, conn, hdr, rhdr, body);
done:
    Py_XDECREF(rhdr);
    Py_XDECREF(body);
    return effects;
}

static PyObject *handler_call(FrameHandler *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (self->admit == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FrameHandler not initialised");
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nkw > 1 || (nkw == 1 && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), names[N_SEALED_BY]) != 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "handle_frame: the only keyword is sealed_by");
        return NULL;
    }
    /* (conn, frame), and sealed_by as a third or by its name, or not at all */
    if (nargs != 2 && !(nargs == 3 && nkw == 0)) {
        PyErr_SetString(PyExc_TypeError, "handle_frame(conn, frame, sealed_by=None)");
        return NULL;
    }
    PyObject *conn = args[0], *frame = args[1];
    PyObject *sealed_by = nargs + nkw == 3 ? args[2] : Py_None;
    PyObject *admitted = sealed_by == Py_None ?
        PyObject_Vectorcall(self->admit, (PyObject *[]){conn, frame}, 2, NULL) : Py_NewRef(Py_None);
    if (admitted == NULL)
        return NULL;
    if (admitted == Py_None) {
        Py_DECREF(admitted);
        return PyObject_VectorcallMethod(names[N_NOT_ADMITTED], (PyObject *[]){conn, frame, sealed_by},
                                         3, NULL);
    }
    PyObject *effects = handled(self, conn, frame, admitted);
    Py_DECREF(admitted);
    return effects;
}

static PyObject *handler_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    FrameHandler *self = (FrameHandler *)PyType_GenericNew(type, args, kwargs);
    if (self != NULL)
        self->vectorcall = (vectorcallfunc)handler_call;    /* (refuses until initialised) */
    return (PyObject *)self;
}

static int handler_init(FrameHandler *self, PyObject *args, PyObject *kwargs) {
    PyObject *admit, *answer, *send_class, *new_object;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "FrameHandler takes no keyword arguments");
        return -1;
    }
    if (self->admit != NULL) {
        PyErr_SetString(PyExc_TypeError, "FrameHandler already initialised");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOO!O:FrameHandler", &admit, &answer, &PyType_Type, &send_class, &new_object))
        return -1;
    if (!PyCallable_Check(admit) || !PyCallable_Check(answer) || !PyCallable_Check(new_object)) {
        PyErr_SetString(PyExc_TypeError, "FrameHandler: admit, answer and new_object are callables");
        return -1;
    }
    self->admit = Py_NewRef(admit);
    self->answer = Py_NewRef(answer);
    self->send_class = Py_NewRef(send_class);
    self->new_object = Py_NewRef(new_object);
    return 0;
}

static int handler_traverse(FrameHandler *self, visitproc visit, void *arg) {
    Py_VISIT(self->admit);
    Py_VISIT(self->answer);
    Py_VISIT(self->send_class);
    Py_VISIT(self->new_object);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int handler_clear(FrameHandler *self) {
    Py_CLEAR(self->admit);
    Py_CLEAR(self->answer);
    Py_CLEAR(self->send_class);
    Py_CLEAR(self->new_object);
    return 0;
}

static void handler_dealloc(FrameHandler *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    handler_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMemberDef handler_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(FrameHandler, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot handler_slots[] = {
    {Py_tp_doc, "A frame in, its effects out, the usual request's way in C (Connection.handle_frame)"},
    {Py_tp_new, handler_new},
    {Py_tp_init, handler_init},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, wire_bind_as_method},
    {Py_tp_dealloc, handler_dealloc},
    {Py_tp_traverse, handler_traverse},
    {Py_tp_clear, handler_clear},
    {Py_tp_members, handler_members},
    {0, NULL},
};

static PyType_Spec handler_spec = {
    .name = "smbring._wire.FrameHandler",
    .basicsize = sizeof(FrameHandler),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = handler_slots,
};

PyObject *wire_frame_handler_type(void) {
    for (int i = 0; i < N_NAMES; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAMES[i])) == NULL)
            return NULL;
    }
    return PyType_FromSpec(&handler_spec);
}
