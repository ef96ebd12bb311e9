/*
 * smbring._wire.OpenFinder: the open a request names (smb.connection's Connection.open_for),
 * looked up and checked in one call.
 *
 * Every request on a file (READ, WRITE, QUERY_INFO, CLOSE, ...) starts with it: a lookup in
 * the client's table, the session and tree connect that made the open compared, a pipe told
 * from a file, the request's ChannelSequence compared and the open's CREATE marked answered.
 * In Python that was some 75 bytecode instructions a request, three times in each file a
 * client copies.
 *
 *   OpenFinder(open_class, error_class, not_for_pipes, check_sequence, fid_any, smb300,
 *              file_closed, invalid_device) -> finder
 *       open_class: smb.state.Open; error_class: SMBError (made with a status);
 *       not_for_pipes: {command: status} for a file command naming a pipe (a dict);
 *       check_sequence(open, hdr): smb.connection.check_channel_sequence; fid_any: the
 *       FileId all 0xFF; smb300: that dialect's number; file_closed, invalid_device: the
 *       statuses STATUS_FILE_CLOSED and STATUS_INVALID_DEVICE_REQUEST.
 *   finder(conn, fid, chain, hdr, kind=open_class) -> the open
 *       As Connection.open_for: in a related compound, FileId fid_any is chain.fid (where
 *       set); conn.client.opens[bytes(fid)] must be of hdr's session and tree connect and not
 *       closing, else error_class(chain.create_error) in a related compound after a failed
 *       CREATE, error_class(file_closed) otherwise; chain.fid becomes bytes(fid); an open
 *       not of `kind` is error_class(not_for_pipes.get(hdr.command, invalid_device)); an
 *       open_class instance has its ChannelSequence checked (check_sequence, on a 3.x
 *       dialect where it differs) and, where its create_key is set (a CREATE a replay
 *       may name made it), conn.state.durable.seen(open) told.
 *
 * A finder is a method descriptor: set as a class attribute (Connection.open_for), it is
 * called as a method is, `conn.open_for(fid, chain, hdr)`, with no bound method made.
 * It keeps no state between calls beyond what it was given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "wire.h"

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *open_class;
    PyObject *error_class;
    PyObject *not_for_pipes;
    PyObject *check_sequence;
    PyObject *fid_any;
    PyObject *file_closed;
    PyObject *invalid_device;
    long smb300;
} Finder;

enum {
    N_CLIENT, N_OPENS, N_SESSION_ID, N_TREE_ID, N_CLOSING, N_RELATED, N_CREATE_ERROR, N_FID,
    N_COMMAND, N_DIALECT, N_STATUS, N_CHANNEL_SEQUENCE, N_STATE, N_DURABLE, N_SEEN, N_KIND,
    N_CREATE_KEY, N_NAMES
};
static const char *const NAMES[N_NAMES] = {
    "client", "opens", "session_id", "tree_id", "closing", "related", "create_error", "fid",
    "command", "dialect", "status", "channel_sequence", "state", "durable", "seen", "kind",
    "create_key",
};
static PyObject *names[N_NAMES];

/* error_class(status) raised; NULL */
static PyObject *refuse(Finder *self, PyObject *status) {
    PyObject *error = PyObject_CallOneArg(self->error_class, status);
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return NULL;
}

/* a.<name> != b.<name>: 1, 0, or -1 with an exception */
static int differ(PyObject *a, PyObject *b, int name) {
    PyObject *x = PyObject_GetAttr(a, names[name]);
    if (x == NULL)
        return -1;
    PyObject *y = PyObject_GetAttr(b, names[name]);
    int verdict = y == NULL ? -1 : PyObject_RichCompareBool(x, y, Py_NE);
    Py_DECREF(x);
    Py_XDECREF(y);
    return verdict;
}

/* The open is refused as closed: the status a failed CREATE left its related requests,
   else file_closed. NULL with the exception. */
static PyObject *closed(Finder *self, PyObject *chain) {
    int related = attr_truth(chain, names[N_RELATED]);
    if (related < 0)
        return NULL;
    if (related) {
        PyObject *status = PyObject_GetAttr(chain, names[N_CREATE_ERROR]);
        if (status == NULL)
            return NULL;
        int set = PyObject_IsTrue(status);
        if (set != 0) {
            if (set > 0)
                refuse(self, status);
            Py_DECREF(status);
            return NULL;
        }
        Py_DECREF(status);
    }
    return refuse(self, self->file_closed);
}

/* A file's open found: its ChannelSequence taken (where the request's differs, on 3.x) and
   its CREATE marked answered. 0, or -1 with an exception. */
static int file_used(Finder *self, PyObject *conn, PyObject *o, PyObject *hdr) {
    PyObject *dialect = PyObject_GetAttr(conn, names[N_DIALECT]);
    if (dialect == NULL)
        return -1;
    long d = PyLong_AsLong(dialect);
    Py_DECREF(dialect);
    if (d == -1 && PyErr_Occurred())
        return -1;
    if (d >= self->smb300) {
        PyObject *status = PyObject_GetAttr(hdr, names[N_STATUS]);
        if (status == NULL)
            return -1;
        unsigned long s = PyLong_AsUnsignedLongMask(status);
        Py_DECREF(status);
        if (s == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        PyObject *sequence = PyObject_GetAttr(o, names[N_CHANNEL_SEQUENCE]);
        if (sequence == NULL)
            return -1;
        PyObject *mine = PyLong_FromUnsignedLong(s & 0xFFFF);
        int differs = mine == NULL ? -1 : PyObject_RichCompareBool(mine, sequence, Py_NE);
        Py_XDECREF(mine);
        Py_DECREF(sequence);
        if (differs < 0)
            return -1;
        if (differs) {
            PyObject *done = PyObject_CallFunctionObjArgs(self->check_sequence, o, hdr, NULL);
            if (done == NULL)
                return -1;
            Py_DECREF(done);
        }
    }
    /* (an open made by a CREATE a replay may name holds its key until a request shows the
       client had the answer: the usual open holds none, and the table is not asked) */
    PyObject *key = PyObject_GetAttr(o, names[N_CREATE_KEY]);
    if (key == NULL)
        return -1;
    int none = key == Py_None;
    Py_DECREF(key);
    if (none)
        return 0;
    PyObject *state = PyObject_GetAttr(conn, names[N_STATE]);
    if (state == NULL)
        return -1;
    PyObject *durable = PyObject_GetAttr(state, names[N_DURABLE]);
    Py_DECREF(state);
    if (durable == NULL)
        return -1;
    PyObject *done = PyObject_CallMethodOneArg(durable, names[N_SEEN], o);
    Py_DECREF(durable);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

/* conn.client.opens.get(key): a new reference, NULL (none: no exception) or NULL with one */
static PyObject *table_get(PyObject *conn, PyObject *key) {
    PyObject *client = PyObject_GetAttr(conn, names[N_CLIENT]);
    if (client == NULL)
        return NULL;
    PyObject *opens = PyObject_GetAttr(client, names[N_OPENS]);
    Py_DECREF(client);
    if (opens == NULL)
        return NULL;
    PyObject *o;
    if (PyDict_Check(opens)) {
        o = PyDict_GetItemWithError(opens, key);
        Py_XINCREF(o);
    } else {
        o = PyObject_CallMethod(opens, "get", "O", key);
        if (o == Py_None)
            Py_CLEAR(o);
    }
    Py_DECREF(opens);
    return o;
}

static PyObject *find(Finder *self, PyObject *conn, PyObject *fid, PyObject *chain, PyObject *hdr,
                      PyObject *kind) {
    /* in a related compound, FileId -1 is the previous request's open */
    int any = PyObject_RichCompareBool(fid, self->fid_any, Py_EQ);
    if (any < 0)
        return NULL;
    PyObject *previous = NULL;
    if (any) {
        int related = attr_truth(chain, names[N_RELATED]);
        if (related < 0)
            return NULL;
        if (related) {
            if ((previous = PyObject_GetAttr(chain, names[N_FID])) == NULL)
                return NULL;
            if (previous == Py_None)
                Py_CLEAR(previous);
        }
    }
    PyObject *named = previous != NULL ? previous : fid;
    PyObject *key = PyBytes_CheckExact(named) ? (Py_INCREF(named), named) : PyBytes_FromObject(named);
    Py_XDECREF(previous);
    if (key == NULL)
        return NULL;
    PyObject *o = table_get(conn, key);
    if (o == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? NULL : closed(self, chain);
    }
    int refused = differ(o, hdr, N_SESSION_ID);
    if (refused == 0)
        refused = differ(o, hdr, N_TREE_ID);
    if (refused == 0)
        refused = attr_truth(o, names[N_CLOSING]);
    if (refused != 0 || PyObject_SetAttr(chain, names[N_FID], key) < 0) {
        Py_DECREF(key);
        Py_DECREF(o);
        return refused > 0 ? closed(self, chain) : NULL;
    }
    Py_DECREF(key);
    int of_kind = PyObject_IsInstance(o, kind);
    if (of_kind <= 0) {
        Py_DECREF(o);
        if (of_kind < 0)
            return NULL;
        PyObject *command = PyObject_GetAttr(hdr, names[N_COMMAND]);
        if (command == NULL)
            return NULL;
        PyObject *status = PyDict_GetItemWithError(self->not_for_pipes, command);    /* borrowed */
        Py_DECREF(command);
        if (status == NULL && PyErr_Occurred())
            return NULL;
        return refuse(self, status != NULL ? status : self->invalid_device);
    }
    int file = PyObject_IsInstance(o, self->open_class);
    if (file < 0 || (file && file_used(self, conn, o, hdr) < 0)) {
        Py_DECREF(o);
        return NULL;
    }
    return o;
}

static PyObject *finder_call(Finder *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (self->open_class == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "OpenFinder not initialised");
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nkw > 1 || (nkw == 1 && PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), names[N_KIND]) != 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "open_for: the only keyword is kind");
        return NULL;
    }
    /* four positional arguments, and kind as a fifth or by its name, or not at all */
    if (nargs != 4 && !(nargs == 5 && nkw == 0)) {
        PyErr_SetString(PyExc_TypeError, "open_for(conn, fid, chain, hdr, kind=Open)");
        return NULL;
    }
    PyObject *kind = nargs + nkw == 5 ? args[4] : self->open_class;
    return find(self, args[0], args[1], args[2], args[3], kind);
}

static PyObject *finder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Finder *self = (Finder *)PyType_GenericNew(type, args, kwargs);
    if (self != NULL)
        self->vectorcall = (vectorcallfunc)finder_call;     /* (refuses until initialised) */
    return (PyObject *)self;
}

static int finder_init(Finder *self, PyObject *args, PyObject *kwargs) {
    PyObject *open_class, *error_class, *not_for_pipes, *check_sequence, *fid_any, *file_closed,
             *invalid_device;
    long smb300;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "OpenFinder takes no keyword arguments");
        return -1;
    }
    if (self->open_class != NULL) {
        PyErr_SetString(PyExc_TypeError, "OpenFinder already initialised");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!OSlO!O!:OpenFinder", &PyType_Type, &open_class, &PyType_Type,
                          &error_class, &PyDict_Type, &not_for_pipes, &check_sequence, &fid_any, &smb300,
                          &PyLong_Type, &file_closed, &PyLong_Type, &invalid_device))
        return -1;
    if (!PyCallable_Check(check_sequence)) {
        PyErr_SetString(PyExc_TypeError, "OpenFinder: check_sequence is not callable");
        return -1;
    }
    PyObject **fields[] = {&self->open_class, &self->error_class, &self->not_for_pipes,
                           &self->check_sequence, &self->fid_any, &self->file_closed, &self->invalid_device};
    PyObject *values[] = {open_class, error_class, not_for_pipes, check_sequence, fid_any, file_closed,
                          invalid_device};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        Py_INCREF(values[i]);
        *fields[i] = values[i];
    }
    self->smb300 = smb300;
    return 0;
}

static int finder_traverse(Finder *self, visitproc visit, void *arg) {
    Py_VISIT(self->open_class);
    Py_VISIT(self->error_class);
    Py_VISIT(self->not_for_pipes);
    Py_VISIT(self->check_sequence);
    Py_VISIT(self->fid_any);
    Py_VISIT(self->file_closed);
    Py_VISIT(self->invalid_device);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int finder_clear(Finder *self) {
    Py_CLEAR(self->open_class);
    Py_CLEAR(self->error_class);
    Py_CLEAR(self->not_for_pipes);
    Py_CLEAR(self->check_sequence);
    Py_CLEAR(self->fid_any);
    Py_CLEAR(self->file_closed);
    Py_CLEAR(self->invalid_device);
    return 0;
}

static void finder_dealloc(Finder *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    finder_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMemberDef finder_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Finder, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot finder_slots[] = {
    {Py_tp_doc, "The open a request names, looked up and checked (Connection.open_for)"},
    {Py_tp_new, finder_new},
    {Py_tp_init, finder_init},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, wire_bind_as_method},
    {Py_tp_dealloc, finder_dealloc},
    {Py_tp_traverse, finder_traverse},
    {Py_tp_clear, finder_clear},
    {Py_tp_members, finder_members},
    {0, NULL},
};

static PyType_Spec finder_spec = {
    .name = "smbring._wire.OpenFinder",
    .basicsize = sizeof(Finder),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR,
    .slots = finder_slots,
};

PyObject *wire_open_finder_type(void) {
    for (int i = 0; i < N_NAMES; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAMES[i])) == NULL)
            return NULL;
    }
    return PyType_FromSpec(&finder_spec);
}
