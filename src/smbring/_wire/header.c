/*
 * smbring._wire: the 64-byte SMB2 header (MS-SMB2 2.2.1) read into and written from
 * smb.wire.Header, made for every request and every response.
 *
 * In Python the cost of a header is the object, not the bytes: struct unpacks the 64 bytes
 * in a tenth of a microsecond, and filling the twelve slots of a new Header takes longer
 * than that again, with or without the dataclass's __init__. Here the values go straight
 * into the slots of the instance as it is allocated.
 *
 *   HeaderCodec(cls) -> codec
 *       cls: smb.wire.Header, a dataclass with slots; its fields' slots are looked up once,
 *       here (each must be a plain object slot of cls's own, else TypeError).
 *   codec.parse(buf) -> Header
 *       A request's header from the start of a bytes-like object: ValueError for fewer than
 *       64 bytes ("short SMB2 header") or another protocol's ("not an SMB2 header"). The
 *       8-byte word is an AsyncId where the flags say ASYNC, else Reserved then TreeId.
 *   codec.response_to(req) -> Header
 *       A response's header as it starts: the request's command, tree and session, the
 *       rest zero, no signer.
 *   codec.pack(header) -> bytes
 *       The 64 bytes, as struct.pack("<4sHHIHHIIQQQ16s") makes them: a value that does not
 *       fit its field raises struct.error, a signature is cut or padded with zeros to 16.
 *   codec.answer(req, rhdr, body) -> bytes | None
 *       A response message as it is sent unsigned: rhdr packed with req's MessageId and
 *       CreditCharge, SERVER_TO_REDIR and req's RELATED flag added, then the body (any
 *       bytes-like object); rhdr itself is left as it is. None where the message would be
 *       longer than a NetBIOS frame carries (0xFFFFFF bytes).
 *
 * Nothing here keeps state between calls beyond what HeaderCodec found.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "wire.h"

#define FLAGS_ASYNC 0x2
#define FLAGS_RELATED 0x4
#define MAX_MESSAGE 0xFFFFFF    /* what a NetBIOS length (24 bits) can carry */

/* the Header's fields, in its dataclass order */
enum {
    F_COMMAND, F_STATUS, F_FLAGS, F_CREDIT_CHARGE, F_CREDITS, F_NEXT_COMMAND, F_MESSAGE_ID,
    F_TREE_ID, F_SESSION_ID, F_ASYNC_ID, F_SIGNATURE, F_SIGNER, N_FIELDS
};
static const char *const FIELD_NAMES[N_FIELDS] = {
    "command", "status", "flags", "credit_charge", "credits", "next_command", "message_id",
    "tree_id", "session_id", "async_id", "signature", "signer",
};

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t offset[N_FIELDS];
    PyObject *zero_signature;   /* b"\0" * 16, shared: bytes do not change */
    PyObject *struct_error;     /* struct.error, what struct.pack raises */
} Codec;

#define SLOT(obj, codec, field) (*(PyObject **)((char *)(obj) + (codec)->offset[field]))

static int codec_init(Codec *self, PyObject *args, PyObject *kwargs) {
    PyTypeObject *cls;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "HeaderCodec takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!:HeaderCodec", &PyType_Type, &cls))
        return -1;
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *name = PyUnicode_FromString(FIELD_NAMES[i]);
        int found = name == NULL ? -1 : wire_slot_offset(cls, name, &self->offset[i]);
        Py_XDECREF(name);
        if (found < 0)
            return -1;
    }
    if (!wire_allocatable(cls))
        return -1;
    PyObject *zero = PyBytes_FromStringAndSize(NULL, 16);
    if (zero == NULL)
        return -1;
    memset(PyBytes_AS_STRING(zero), 0, 16);
    PyObject *struct_module = PyImport_ImportModule("struct");
    if (struct_module == NULL) {
        Py_DECREF(zero);
        return -1;
    }
    PyObject *error = PyObject_GetAttrString(struct_module, "error");
    Py_DECREF(struct_module);
    if (error == NULL) {
        Py_DECREF(zero);
        return -1;
    }
    Py_INCREF(cls);
    Py_XSETREF(self->cls, cls);
    Py_XSETREF(self->zero_signature, zero);
    Py_XSETREF(self->struct_error, error);
    return 0;
}

static int codec_ready(Codec *self) {
    if (self->cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "HeaderCodec not initialised");
        return 0;
    }
    return 1;
}

/* A new instance of the codec's class with every slot set from `values` (stolen, all
   non-NULL); NULL (values released) if an allocation failed. */
static PyObject *filled(Codec *self, PyObject *values[N_FIELDS]) {
    for (int i = 0; i < N_FIELDS; i++) {
        if (values[i] == NULL) {
            for (int j = 0; j < N_FIELDS; j++)
                Py_XDECREF(values[j]);
            return NULL;
        }
    }
    PyObject *obj = self->cls->tp_alloc(self->cls, 0);
    if (obj == NULL) {
        for (int j = 0; j < N_FIELDS; j++)
            Py_DECREF(values[j]);
        return NULL;
    }
    for (int i = 0; i < N_FIELDS; i++)
        SLOT(obj, self, i) = values[i];     /* (tp_alloc zeroed them: nothing to release) */
    return obj;
}

static PyObject *header_from(Codec *self, const unsigned char *h);

static PyObject *codec_parse(Codec *self, PyObject *buf) {
    if (!codec_ready(self))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len < HEADER_SIZE) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "short SMB2 header");
        return NULL;
    }
    unsigned char h[HEADER_SIZE];
    memcpy(h, view.buf, HEADER_SIZE);
    PyBuffer_Release(&view);
    if (!is_smb2_header(h)) {
        PyErr_SetString(PyExc_ValueError, "not an SMB2 header");
        return NULL;
    }
    return header_from(self, h);
}

/* The Header of 64 bytes known to be one (codec_parse checked them). */
static PyObject *header_from(Codec *self, const unsigned char *h) {
    uint32_t flags = le32(h + 16);
    uint64_t word = le64(h + 32);
    static const unsigned char zeros[16];
    PyObject *values[N_FIELDS];
    values[F_COMMAND] = PyLong_FromUnsignedLong(le16(h + 12));
    values[F_STATUS] = PyLong_FromUnsignedLong(le32(h + 8));
    values[F_FLAGS] = PyLong_FromUnsignedLong(flags);
    values[F_CREDIT_CHARGE] = PyLong_FromUnsignedLong(le16(h + 6));
    values[F_CREDITS] = PyLong_FromUnsignedLong(le16(h + 14));
    values[F_NEXT_COMMAND] = PyLong_FromUnsignedLong(le32(h + 20));
    values[F_MESSAGE_ID] = PyLong_FromUnsignedLongLong(le64(h + 24));
    /* Reserved (ProcessId) in the low half of the word, TreeId in the high half; or the AsyncId */
    values[F_TREE_ID] = PyLong_FromUnsignedLongLong(flags & FLAGS_ASYNC ? 0 : word >> 32);
    values[F_SESSION_ID] = PyLong_FromUnsignedLongLong(le64(h + 40));
    values[F_ASYNC_ID] = PyLong_FromUnsignedLongLong(flags & FLAGS_ASYNC ? word : 0);
    if (memcmp(h + 48, zeros, 16) == 0) {
        Py_INCREF(self->zero_signature);
        values[F_SIGNATURE] = self->zero_signature;
    } else {
        values[F_SIGNATURE] = PyBytes_FromStringAndSize((const char *)h + 48, 16);
    }
    Py_INCREF(Py_None);
    values[F_SIGNER] = Py_None;
    return filled(self, values);
}

static int is_header(Codec *self, PyObject *obj) {
    if (Py_TYPE(obj) != self->cls) {
        PyErr_Format(PyExc_TypeError, "expected %s, not %s", self->cls->tp_name, Py_TYPE(obj)->tp_name);
        return 0;
    }
    return 1;
}

/* A slot's value (borrowed), or NULL with AttributeError when it was never set. */
static PyObject *slot(Codec *self, PyObject *obj, int field) {
    PyObject *value = SLOT(obj, self, field);
    if (value == NULL)
        PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute '%s'",
                     self->cls->tp_name, FIELD_NAMES[field]);
    return value;
}

static PyObject *codec_response_to(Codec *self, PyObject *req) {
    if (!codec_ready(self) || !is_header(self, req))
        return NULL;
    PyObject *command = slot(self, req, F_COMMAND), *tree = slot(self, req, F_TREE_ID),
             *session = slot(self, req, F_SESSION_ID);
    if (command == NULL || tree == NULL || session == NULL)
        return NULL;
    PyObject *values[N_FIELDS];
    for (int i = 0; i < N_FIELDS; i++)
        values[i] = PyLong_FromLong(0);         /* (a cached small int) */
    Py_INCREF(command);
    Py_SETREF(values[F_COMMAND], command);
    Py_INCREF(tree);
    Py_SETREF(values[F_TREE_ID], tree);
    Py_INCREF(session);
    Py_SETREF(values[F_SESSION_ID], session);
    Py_INCREF(self->zero_signature);
    Py_SETREF(values[F_SIGNATURE], self->zero_signature);
    Py_INCREF(Py_None);
    Py_SETREF(values[F_SIGNER], Py_None);
    return filled(self, values);
}

/* A field's value as an integer of at most `bits` bits; -1 with struct.error (or TypeError,
   AttributeError) otherwise, as struct.pack refuses it. */
static int field_value(Codec *self, PyObject *obj, int field, int bits, uint64_t *out) {
    PyObject *value = slot(self, obj, field);
    if (value == NULL)
        return -1;
    if (!PyLong_Check(value)) {
        PyErr_Format(self->struct_error, "required argument is not an integer (%s)", FIELD_NAMES[field]);
        return -1;
    }
    int overflow = 0;
    long long as_signed = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (as_signed == -1 && PyErr_Occurred())
        return -1;
    unsigned long long v;
    if (overflow > 0) {
        v = PyLong_AsUnsignedLongLong(value);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            goto out_of_range;
        }
    } else if (overflow < 0 || as_signed < 0) {
        goto out_of_range;
    } else {
        v = (unsigned long long)as_signed;
    }
    if (bits < 64 && v >> bits)
        goto out_of_range;
    *out = v;
    return 0;
out_of_range:
    PyErr_Format(self->struct_error, "%s out of range for %d bits", FIELD_NAMES[field], bits);
    return -1;
}

/* The 64 bytes of `hdr` into p; where `req` is given, as the response to it is sent
   (`answer`): its MessageId and CreditCharge, SERVER_TO_REDIR and its RELATED flag. */
static int header_bytes(Codec *self, PyObject *hdr, PyObject *req, unsigned char p[HEADER_SIZE]) {
    uint64_t command, status, flags, charge, credits, next, message_id, tree, session, async_id;
    PyObject *ids = req != NULL ? req : hdr;
    if (field_value(self, ids, F_CREDIT_CHARGE, 16, &charge) < 0 ||
            field_value(self, hdr, F_STATUS, 32, &status) < 0 ||
            field_value(self, hdr, F_COMMAND, 16, &command) < 0 ||
            field_value(self, hdr, F_CREDITS, 16, &credits) < 0 ||
            field_value(self, hdr, F_FLAGS, 32, &flags) < 0 ||
            field_value(self, hdr, F_NEXT_COMMAND, 32, &next) < 0 ||
            field_value(self, ids, F_MESSAGE_ID, 64, &message_id) < 0)
        return -1;
    if (req != NULL) {
        uint64_t req_flags;
        if (field_value(self, req, F_FLAGS, 32, &req_flags) < 0)
            return -1;
        flags |= FLAGS_SERVER_TO_REDIR | (req_flags & FLAGS_RELATED);
    }
    uint64_t word;
    if (flags & FLAGS_ASYNC) {
        if (field_value(self, hdr, F_ASYNC_ID, 64, &async_id) < 0)
            return -1;
        word = async_id;
    } else {
        if (field_value(self, hdr, F_TREE_ID, 32, &tree) < 0)
            return -1;
        word = tree << 32;      /* Reserved (process id) then TreeId */
    }
    if (field_value(self, hdr, F_SESSION_ID, 64, &session) < 0)
        return -1;
    PyObject *signature = slot(self, hdr, F_SIGNATURE);
    if (signature == NULL)
        return -1;
    if (!PyBytes_Check(signature) && !PyByteArray_Check(signature)) {
        PyErr_SetString(self->struct_error, "argument for 's' must be a bytes object (signature)");
        return -1;
    }
    const char *sig;
    Py_ssize_t sig_len;
    if (PyBytes_Check(signature)) {
        sig = PyBytes_AS_STRING(signature);
        sig_len = PyBytes_GET_SIZE(signature);
    } else {
        sig = PyByteArray_AS_STRING(signature);
        sig_len = PyByteArray_GET_SIZE(signature);
    }
    memcpy(p, "\xfeSMB", 4);
    put16(p + 4, HEADER_SIZE);
    put16(p + 6, charge);
    put32(p + 8, status);
    put16(p + 12, command);
    put16(p + 14, credits);
    put32(p + 16, flags);
    put32(p + 20, next);
    put64(p + 24, message_id);
    put64(p + 32, word);
    put64(p + 40, session);
    memset(p + 48, 0, 16);
    memcpy(p + 48, sig, sig_len < 16 ? (size_t)sig_len : 16);
    return 0;
}

static PyObject *codec_pack(Codec *self, PyObject *hdr) {
    if (!codec_ready(self) || !is_header(self, hdr))
        return NULL;
    unsigned char p[HEADER_SIZE];
    if (header_bytes(self, hdr, NULL, p) < 0)
        return NULL;
    return PyBytes_FromStringAndSize((const char *)p, HEADER_SIZE);
}

static PyObject *codec_answer(Codec *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "answer(req, rhdr, body) takes 3 arguments");
        return NULL;
    }
    if (!codec_ready(self) || !is_header(self, args[0]) || !is_header(self, args[1]))
        return NULL;
    unsigned char p[HEADER_SIZE];
    if (header_bytes(self, args[1], args[0], p) < 0)
        return NULL;
    Py_buffer body;
    if (PyObject_GetBuffer(args[2], &body, PyBUF_SIMPLE) < 0)
        return NULL;
    if (body.len > MAX_MESSAGE - HEADER_SIZE) {
        PyBuffer_Release(&body);
        Py_RETURN_NONE;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + body.len);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), p, HEADER_SIZE);
        memcpy(PyBytes_AS_STRING(out) + HEADER_SIZE, body.buf, (size_t)body.len);
    }
    PyBuffer_Release(&body);
    return out;
}

static int codec_traverse(Codec *self, visitproc visit, void *arg) {
    Py_VISIT(self->cls);
    Py_VISIT(self->zero_signature);
    Py_VISIT(self->struct_error);
    return 0;
}

static int codec_clear(Codec *self) {
    Py_CLEAR(self->cls);
    Py_CLEAR(self->zero_signature);
    Py_CLEAR(self->struct_error);
    return 0;
}

static void codec_dealloc(Codec *self) {
    PyObject_GC_UnTrack(self);
    codec_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef codec_methods[] = {
    {"parse", (PyCFunction)codec_parse, METH_O, "parse(buf) -> Header: the SMB2 header at buf's start"},
    {"response_to", (PyCFunction)codec_response_to, METH_O,
     "response_to(req) -> Header: a response's header as it starts"},
    {"pack", (PyCFunction)codec_pack, METH_O, "pack(header) -> bytes: the 64 bytes"},
    {"answer", (PyCFunction)(void (*)(void))codec_answer, METH_FASTCALL,
     "answer(req, rhdr, body) -> bytes | None: the response message as sent, or None where "
     "it is too long for a NetBIOS frame"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CodecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._wire.HeaderCodec",
    .tp_basicsize = sizeof(Codec),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "HeaderCodec(cls): SMB2 headers read into and written from instances of cls",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)codec_init,
    .tp_dealloc = (destructor)codec_dealloc,
    .tp_traverse = (traverseproc)codec_traverse,
    .tp_clear = (inquiry)codec_clear,
    .tp_methods = codec_methods,
};

PyObject *wire_header_from(PyObject *codec, const unsigned char *h) {
    if (Py_TYPE(codec) != &CodecType) {
        PyErr_SetString(PyExc_TypeError, "expected a HeaderCodec");
        return NULL;
    }
    if (!codec_ready((Codec *)codec))
        return NULL;
    return header_from((Codec *)codec, h);
}

PyObject *wire_header_response_to(PyObject *codec, PyObject *req) {
    if (Py_TYPE(codec) != &CodecType) {
        PyErr_SetString(PyExc_TypeError, "expected a HeaderCodec");
        return NULL;
    }
    return codec_response_to((Codec *)codec, req);
}

static PyMethodDef module_methods[] = {
    {"answer_echoes", (PyCFunction)(void (*)(void))wire_answer_echoes, METH_FASTCALL,
     "answer_echoes(buf, start, end, max_frames, max_size, window, multi_credit, sessions) -> "
     "None | (next_start, count, responses): plain ECHOs answered (see echo.c)"},
    {"check_sizes", (PyCFunction)(void (*)(void))wire_check_sizes, METH_FASTCALL,
     "check_sizes(msg, layout, command, dialect, charge, limits, budget_left) -> status: 0, or "
     "why the request's sizes are refused (see sizes.c)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smbring._wire",
    "The SMB2 header read into and written from smb.wire.Header; plain ECHOs answered; a "
    "request's sizes checked; the checks before a handler for the usual request; the credit window's take; instances of a dataclass with slots made without its __init__; the open a request names; a frame handled, the usual request's way; a connection's receive buffer and the serving of its frames.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

/* type (a new reference, or NULL with an exception) added to m as `name`: 0, or -1 */
static int add_type(PyObject *m, const char *name, PyObject *type) {
    if (type == NULL || PyModule_AddObject(m, name, type) < 0) {
        Py_XDECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__wire(void) {
    if (PyType_Ready(&CodecType) < 0 || wire_echo_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CodecType);
    if (PyModule_AddObject(m, "HeaderCodec", (PyObject *)&CodecType) < 0) {
        Py_DECREF(&CodecType);
        Py_DECREF(m);
        return NULL;
    }
    if (add_type(m, "CreditWindowBase", wire_credit_window_type()) < 0 ||
            add_type(m, "Admission", wire_admission_type()) < 0 ||
            add_type(m, "SlotMaker", wire_slot_maker_type()) < 0 ||
            add_type(m, "OpenFinder", wire_open_finder_type()) < 0 ||
            add_type(m, "FrameHandler", wire_frame_handler_type()) < 0 ||
            add_type(m, "ReceiveBuffer", wire_receive_buffer_type()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
