/*
 * smbring._wire.Admission: the checks before a handler (smb.connection's `_one`) for the
 * usual request, in one call: a frame of one request, neither signed nor sealed, of a
 * session that requires neither, on a tree connect it reaches unencrypted.
 *
 * In Python those checks are a dozen attribute lookups and branches around the handler,
 * as costly as many handlers themselves. Here they are read in one pass, and anything
 * unusual is left to Python: `admit` changes nothing unless it admits the request, and
 * where it does not, the connection checks the request as it checks any (`_one`), which
 * answers every failure (its status, its signature, its logging) in one place.
 *
 *   Admission(codec, commands, chain_class, new_object, refused_flags) -> admission
 *       codec: smb.wire.HEADER_CODEC; commands: smb.dispatch.COMMANDS (looked up per
 *       request, so it may change); chain_class and new_object: smb.state.Chain and
 *       object.__new__ (a Chain with its defaults); refused_flags: the header flags that
 *       send a request the long way (those not allowed, RELATED, SIGNED).
 *   admission.admit(conn, frame) -> None | (hdr, rhdr, chain, handler)
 *       None: not the usual request; nothing read from it has been taken or changed.
 *       Else its MessageIds are consumed and its credits granted (conn.credits.take),
 *       conn.frame_commands and conn._sealed_by set as for any frame of one request, and
 *       the caller calls handler(conn, hdr, frame, rhdr, chain): rhdr is the response's
 *       header with its credits, chain a fresh Chain with the request's ids and tree.
 *
 * What a request must be to be admitted, each a check `_one` makes or a case it treats
 * apart: 66 bytes at least, an SMB2 header, no NextCommand and none of refused_flags;
 * not CANCEL, IOCTL (a test hook), TREE_CONNECT (its own protection checks), NEGOTIATE,
 * SESSION_SETUP or ECHO; a command of the table that needs a session; conn.limits.max_compound >= 1 and no background write
 * in progress (conn._background empty); the session found, valid, neither encrypting nor
 * signing nor expiring (expires 0), reached here (Connection.reaches); its tree
 * connect found (where the command needs one) on a share that does not require encryption;
 * sizes that check_sizes passes; MessageIds the credit window takes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "wire.h"

#define SHORTEST_REQUEST (HEADER_SIZE + 2)
/* the commands `_one` checks in ways of their own, refused at once: NEGOTIATE, SESSION_SETUP
   and ECHO need no session (the table says so too: refused again there), TREE_CONNECT has its
   protection checks, IOCTL a test hook, CANCEL no answer */
#define OWN_CHECKS ((1u << 0x00) | (1u << 0x01) | (1u << 0x03) | (1u << 0x0B) | (1u << 0x0C) | (1u << 0x0D))

typedef struct {
    PyObject_HEAD
    PyObject *codec;
    PyObject *commands;
    PyObject *chain_class;
    PyObject *new_object;
    uint32_t refused_flags;
} Admission;

/* attribute names, interned once (wire_admission_type) */
enum {
    N_LIMITS, N_MAX_COMPOUND, N_MAX_FRAME, N_BACKGROUND, N_CLIENT, N_SESSIONS, N_VALID,
    N_ENCRYPT, N_SIGN, N_EXPIRES, N_CHANNELS, N_AUTH, N_TREES, N_SHARE, N_NEEDS_SESSION,
    N_NEEDS_TREE, N_LAYOUT, N_HANDLER, N_DIALECT, N_CREDITS, N_TAKE, N_CREDITS_FIELD,
    N_FRAME_COMMANDS, N_SEALED_BY, N_TREE, N_SESSION_ID, N_TREE_ID, N_NAMES
};
static const char *const NAMES[N_NAMES] = {
    "limits", "max_compound", "max_frame", "_background", "client", "sessions", "valid",
    "encrypt", "sign", "expires", "channels", "auth", "trees", "share", "needs_session",
    "needs_tree", "layout", "handler", "dialect", "credits", "take", "credits",
    "frame_commands", "_sealed_by", "tree", "session_id", "tree_id",
};
static PyObject *names[N_NAMES];

/* The truth of obj.<names[name]>: 1, 0, or -1 with an exception. */
static int attr_true(PyObject *obj, int name) {
    return attr_truth(obj, names[name]);
}

/* mapping.get(key) where mapping is a dict (else not found): a new reference, NULL (not
   found: *failed 0) or NULL with *failed 1 and an exception. */
static PyObject *dict_get(PyObject *mapping, PyObject *key, int *failed) {
    *failed = 0;
    if (mapping == NULL || key == NULL || !PyDict_Check(mapping)) {
        *failed = mapping == NULL || key == NULL;
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(mapping, key);
    if (value == NULL) {
        *failed = PyErr_Occurred() != NULL;
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* obj.<names[name]>.get(key) for a dict attribute (see dict_get) */
static PyObject *attr_get(PyObject *obj, int name, PyObject *key, int *failed) {
    PyObject *mapping = PyObject_GetAttr(obj, names[name]);
    PyObject *value = dict_get(mapping, key, failed);
    Py_XDECREF(mapping);
    return value;
}

/* an int attribute: its value, or -1 with *failed set (an exception) or unset (not an int
   within range: the caller does not admit) */
static long long attr_int(PyObject *obj, int name, int *failed) {
    *failed = 0;
    PyObject *value = PyObject_GetAttr(obj, names[name]);
    if (value == NULL) {
        *failed = 1;
        return -1;
    }
    long long v = -1;
    if (PyLong_Check(value)) {
        int overflow;
        v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred())
            *failed = 1;
        else if (overflow)
            v = -1;
    }
    Py_DECREF(value);
    return v;
}

/* Connection.reaches(session): a channel on conn, its binding complete (auth None); or, for
   a session put straight into the table (no client, no channels), conn's own. 1, 0 or -1. */
static int reached(PyObject *session, PyObject *conn) {
    PyObject *channels = PyObject_GetAttr(session, names[N_CHANNELS]);
    if (channels == NULL)
        return -1;
    int failed;
    PyObject *channel = dict_get(channels, conn, &failed);
    if (channel == NULL) {
        int verdict = failed ? -1 : 0;
        if (!failed && PyDict_Check(channels) && PyDict_GET_SIZE(channels) == 0) {
            PyObject *client = PyObject_GetAttr(session, names[N_CLIENT]);
            verdict = client == NULL ? -1 : client == Py_None;
            Py_XDECREF(client);
        }
        Py_DECREF(channels);
        return verdict;
    }
    Py_DECREF(channels);
    PyObject *auth = PyObject_GetAttr(channel, names[N_AUTH]);
    Py_DECREF(channel);
    if (auth == NULL)
        return -1;
    int verdict = auth == Py_None;
    Py_DECREF(auth);
    return verdict;
}

/* The checks that read the connection's state; 1: admitted so far (a new reference to the
   session's tree connect in *tree, or None where the command needs none), 0: not, -1: an
   exception. */
static int session_admits(PyObject *conn, PyObject *entry, uint64_t sid,
                          uint32_t tid, PyObject **tree) {
    int failed;
    *tree = NULL;
    int needs_tree = attr_true(entry, N_NEEDS_TREE);
    if (needs_tree < 0)
        return -1;
    PyObject *client = PyObject_GetAttr(conn, names[N_CLIENT]);
    if (client == NULL)
        return -1;
    PyObject *key = PyLong_FromUnsignedLongLong(sid);
    PyObject *session = attr_get(client, N_SESSIONS, key, &failed);
    Py_XDECREF(key);
    Py_DECREF(client);
    if (session == NULL)
        return failed ? -1 : 0;
    int verdict = -1;
    int v;
    if ((v = attr_true(session, N_VALID)) <= 0 ||
            (v = !attr_true(session, N_ENCRYPT)) <= 0 || (v = !attr_true(session, N_SIGN)) <= 0 ||
            (v = !attr_true(session, N_EXPIRES)) <= 0) {
        /* (!attr_true: -1, an exception, became 0: told apart by PyErr_Occurred) */
        verdict = PyErr_Occurred() ? -1 : v;
        goto done;
    }
    v = reached(session, conn);
    if (v <= 0) {
        verdict = v;
        goto done;
    }
    if (!needs_tree) {
        *tree = Py_NewRef(Py_None);
        verdict = 1;
        goto done;
    }
    key = PyLong_FromUnsignedLong(tid);
    PyObject *t = attr_get(session, N_TREES, key, &failed);
    Py_XDECREF(key);
    if (t == NULL) {
        verdict = failed ? -1 : 0;
        goto done;
    }
    PyObject *share = PyObject_GetAttr(t, names[N_SHARE]);
    if (share == NULL) {
        Py_DECREF(t);
        goto done;
    }
    int sealed_share = 0;
    int truth = PyObject_IsTrue(share);
    if (truth > 0)
        sealed_share = attr_true(share, N_ENCRYPT);
    Py_DECREF(share);
    if (truth < 0 || sealed_share < 0) {
        Py_DECREF(t);
        goto done;
    }
    if (sealed_share) {
        Py_DECREF(t);
        verdict = 0;
        goto done;
    }
    *tree = t;
    verdict = 1;
done:
    Py_DECREF(session);
    return verdict;
}

/* sizes, then credits: the last checks, the second the first to change anything. The
   credits granted (>= 0), -1: not admitted, -2: an exception. */
static long long sizes_and_credits(PyObject *conn, PyObject *frame, PyObject *entry,
                                   const unsigned char *h, PyObject *limits) {
    int failed;
    long long dialect = attr_int(conn, N_DIALECT, &failed);
    if (failed)
        return -2;
    if (dialect < 0 || dialect > 0xFFFF)
        return -1;
    uint16_t charge = (uint16_t)le16(h + 6);
    PyObject *args[7] = {frame, NULL, NULL, NULL, NULL, limits, NULL};
    args[1] = PyObject_GetAttr(entry, names[N_LAYOUT]);
    args[2] = PyLong_FromUnsignedLong(le16(h + 12));
    args[3] = PyLong_FromLongLong(dialect);
    args[4] = PyLong_FromUnsignedLong(charge);
    args[6] = PyObject_GetAttr(limits, names[N_MAX_FRAME]);
    PyObject *status = NULL;
    if (args[1] && args[2] && args[3] && args[4] && args[6])
        status = wire_check_sizes(NULL, args, 7);
    for (int i = 1; i < 7; i++)
        if (i != 5)
            Py_XDECREF(args[i]);
    if (status == NULL)
        return -2;
    int passed = PyLong_Check(status) && PyLong_AsLong(status) == 0;
    Py_DECREF(status);
    if (!passed)
        return -1;
    PyObject *credits = PyObject_GetAttr(conn, names[N_CREDITS]);
    if (credits == NULL)
        return -2;
    long charged = dialect > SMB202 ? (charge ? charge : 1) : 1;
    PyObject *take_args[4] = {credits, PyLong_FromUnsignedLongLong(le64(h + 24)),
                              PyLong_FromLong(charged), PyLong_FromUnsignedLong(le16(h + 14))};
    PyObject *granted = NULL;
    if (take_args[1] && take_args[2] && take_args[3])
        granted = PyObject_VectorcallMethod(names[N_TAKE], take_args,
                                            4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    for (int i = 0; i < 4; i++)
        Py_XDECREF(take_args[i]);
    if (granted == NULL)
        return -2;
    long long n = PyLong_Check(granted) ? PyLong_AsLongLong(granted) : -1;
    Py_DECREF(granted);
    if (n == -1 && PyErr_Occurred())
        return -2;
    return n < 0 ? -1 : n;
}

/* The admitted request's objects: (hdr, rhdr, chain, handler), its effects on conn made. */
static PyObject *admitted(Admission *self, PyObject *conn, PyObject *entry, const unsigned char *h,
                          PyObject *tree, long long granted) {
    PyObject *hdr = wire_header_from(self->codec, h);
    if (hdr == NULL)
        return NULL;
    PyObject *rhdr = wire_header_response_to(self->codec, hdr);
    PyObject *handler = PyObject_GetAttr(entry, names[N_HANDLER]);
    PyObject *chain = PyObject_CallOneArg(self->new_object, self->chain_class);
    PyObject *commands = PyList_New(1);
    PyObject *value = PyLong_FromLongLong(granted);
    PyObject *sid = PyLong_FromUnsignedLongLong(le64(h + 40));
    PyObject *tid = PyLong_FromUnsignedLong(le32(h + 36));
    PyObject *command = PyLong_FromUnsignedLong(le16(h + 12));
    PyObject *result = NULL;
    if (rhdr && handler && chain && commands && value && sid && tid && command &&
            PyObject_SetAttr(rhdr, names[N_CREDITS_FIELD], value) == 0 &&
            (tree == Py_None || PyObject_SetAttr(chain, names[N_TREE], tree) == 0) &&
            PyObject_SetAttr(chain, names[N_SESSION_ID], sid) == 0 &&
            PyObject_SetAttr(chain, names[N_TREE_ID], tid) == 0) {
        PyList_SET_ITEM(commands, 0, command);
        command = NULL;
        if (PyObject_SetAttr(conn, names[N_FRAME_COMMANDS], commands) == 0 &&
                PyObject_SetAttr(conn, names[N_SEALED_BY], Py_None) == 0)
            result = PyTuple_Pack(4, hdr, rhdr, chain, handler);
    }
    Py_DECREF(hdr);
    Py_XDECREF(rhdr);
    Py_XDECREF(handler);
    Py_XDECREF(chain);
    Py_XDECREF(commands);
    Py_XDECREF(value);
    Py_XDECREF(sid);
    Py_XDECREF(tid);
    Py_XDECREF(command);
    return result;
}

/* The header's own checks: 1 or 0. */
static int header_admits(Admission *self, const unsigned char *h) {
    if (!is_smb2_header(h))
        return 0;
    uint32_t command = le16(h + 12);
    return le32(h + 20) == 0 && !(le32(h + 16) & self->refused_flags) &&
           command < 32 && !(OWN_CHECKS & (1u << command));
}

/* The command's entry in the table where it needs a session (a new reference), else NULL:
   *failed tells an exception apart. */
static PyObject *session_command(Admission *self, const unsigned char *h, int *failed) {
    PyObject *key = PyLong_FromUnsignedLong(le16(h + 12));
    PyObject *entry = dict_get(self->commands, key, failed);
    Py_XDECREF(key);
    if (entry == NULL)
        return NULL;
    int needs = attr_true(entry, N_NEEDS_SESSION);
    if (needs <= 0) {
        *failed = needs < 0;
        Py_DECREF(entry);
        return NULL;
    }
    return entry;
}

/* The connection's cheap checks: 1, 0 or -1 (an exception); its limits in *limits where 1. */
static int connection_admits(PyObject *conn, PyObject **limits) {
    *limits = NULL;
    int busy = attr_true(conn, N_BACKGROUND);
    if (busy != 0)
        return busy < 0 ? -1 : 0;
    PyObject *l = PyObject_GetAttr(conn, names[N_LIMITS]);
    if (l == NULL)
        return -1;
    int failed;
    long long most = attr_int(l, N_MAX_COMPOUND, &failed);
    if (failed || most < 1) {
        Py_DECREF(l);
        return failed ? -1 : 0;
    }
    *limits = l;
    return 1;
}

static PyObject *admission_admit(Admission *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "admit(conn, frame) takes 2 arguments");
        return NULL;
    }
    if (self->codec == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Admission not initialised");
        return NULL;
    }
    PyObject *conn = args[0], *frame = args[1];
    Py_buffer view;
    if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (view.len < SHORTEST_REQUEST) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    /* (a copy: what Python code run by the lookups below may do to the frame's buffer
       cannot change the header checked) */
    unsigned char h[HEADER_SIZE];
    memcpy(h, view.buf, HEADER_SIZE);
    PyBuffer_Release(&view);

    if (!header_admits(self, h))
        Py_RETURN_NONE;
    int failed;
    PyObject *entry = session_command(self, h, &failed);
    if (entry == NULL) {
        if (failed)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *limits = NULL;
    PyObject *tree = NULL;
    PyObject *result = NULL;
    int verdict = connection_admits(conn, &limits);
    if (verdict <= 0) {
        if (verdict == 0)
            result = Py_NewRef(Py_None);
        goto done;
    }
    verdict = session_admits(conn, entry, le64(h + 40), le32(h + 36), &tree);
    if (verdict <= 0) {
        if (verdict == 0)
            result = Py_NewRef(Py_None);
        goto done;
    }
    long long granted = sizes_and_credits(conn, frame, entry, h, limits);
    if (granted == -1)
        result = Py_NewRef(Py_None);
    else if (granted >= 0)
        result = admitted(self, conn, entry, h, tree, granted);
done:
    Py_XDECREF(tree);
    Py_DECREF(entry);
    Py_XDECREF(limits);
    return result;
}

static int admission_init(Admission *self, PyObject *args, PyObject *kwargs) {
    PyObject *codec, *commands, *chain_class, *new_object;
    unsigned long refused;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Admission takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OO!O!Ok:Admission", &codec, &PyDict_Type, &commands,
                          &PyType_Type, &chain_class, &new_object, &refused))
        return -1;
    if (refused > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "Admission: refused_flags must fit 32 bits");
        return -1;
    }
    if (!PyCallable_Check(new_object)) {
        PyErr_SetString(PyExc_TypeError, "Admission: new_object must be callable");
        return -1;
    }
    Py_INCREF(codec);
    Py_INCREF(commands);
    Py_INCREF(chain_class);
    Py_INCREF(new_object);
    Py_XSETREF(self->codec, codec);
    Py_XSETREF(self->commands, commands);
    Py_XSETREF(self->chain_class, chain_class);
    Py_XSETREF(self->new_object, new_object);
    self->refused_flags = (uint32_t)refused;
    return 0;
}

static int admission_traverse(Admission *self, visitproc visit, void *arg) {
    Py_VISIT(self->codec);
    Py_VISIT(self->commands);
    Py_VISIT(self->chain_class);
    Py_VISIT(self->new_object);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int admission_clear(Admission *self) {
    Py_CLEAR(self->codec);
    Py_CLEAR(self->commands);
    Py_CLEAR(self->chain_class);
    Py_CLEAR(self->new_object);
    return 0;
}

static void admission_dealloc(Admission *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    admission_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef admission_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))admission_admit, METH_FASTCALL,
     "admit(conn, frame) -> None, or (hdr, rhdr, chain, handler) for a request the "
     "connection's checks would pass, its credits taken"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot admission_slots[] = {
    {Py_tp_doc, "The checks before a handler for the usual request (smb.connection)"},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, admission_init},
    {Py_tp_dealloc, admission_dealloc},
    {Py_tp_traverse, admission_traverse},
    {Py_tp_clear, admission_clear},
    {Py_tp_methods, admission_methods},
    {0, NULL},
};

static PyType_Spec admission_spec = {
    .name = "smbring._wire.Admission",
    .basicsize = sizeof(Admission),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = admission_slots,
};

PyObject *wire_admission_type(void) {
    for (int i = 0; i < N_NAMES; i++) {
        if (names[i] == NULL && (names[i] = PyUnicode_InternFromString(NAMES[i])) == NULL)
            return NULL;
    }
    return PyType_FromSpec(&admission_spec);
}
