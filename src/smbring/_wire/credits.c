/*
 * smbring._wire.CreditWindowBase: the state of smb.credits.CreditWindow and its `take`,
 * the one call every request makes (its MessageIds consumed, its response's credits
 * granted). The rest of the class (the general consume, smb.credits.CreditWindow's
 * `_consume_any`, and the rarely used entry points) stays Python, in the subclass: `take`
 * calls `self._consume_any(message_id, charge)` for any request but the usual one.
 *
 * Members (read and written from Python as the class's attributes were): max, low, range,
 * granted (integers), _used (the set of MessageIds used out of order above low),
 * _either_first (bool). `take` does what smb/credits.py says it does, in the same order, with
 * Python's integer semantics (floor division) for the values a window can hold.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <limits.h>
#include <stdint.h>

#include "wire.h"

typedef struct {
    PyObject_HEAD
    long long max;
    long long low;
    long long range;
    long long granted;
    PyObject *used;         /* a set, or NULL until the subclass's __init__ sets it */
    char either_first;
} Window;

static PyObject *s_consume_any;

/* the magnitude any value of the grant's arithmetic stays within (its products then fit) */
#define BOUND (1LL << 40)

/* a // b as Python floors it (b > 0 here) */
static inline long long floor_div(long long a, long long b) {
    long long q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* the window slides past every id used out of order (the loop of the usual case) */
static int slide(Window *w) {
    while (w->used != NULL && PySet_GET_SIZE(w->used) > 0) {
        PyObject *id = PyLong_FromLongLong(w->low);
        if (id == NULL)
            return -1;
        int found = PySet_Discard(w->used, id);
        Py_DECREF(id);
        if (found <= 0)
            return found;
        w->low += 1;
        w->range -= 1;
    }
    return 0;
}

static PyObject *window_take(Window *w, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "take(message_id, charge, requested)");
        return NULL;
    }
    PyObject *message_id = args[0], *requested_arg = args[2];
    long long charge = PyLong_AsLongLong(args[1]);
    if (charge == -1 && PyErr_Occurred())
        return NULL;
    if (message_id != Py_None && !PyLong_Check(message_id)) {
        PyErr_SetString(PyExc_TypeError, "take: message_id must be an int or None");
        return NULL;
    }
    if (requested_arg != Py_None && !PyLong_Check(requested_arg)) {
        PyErr_SetString(PyExc_TypeError, "take: requested must be an int or None");
        return NULL;
    }
    /* everything checked before anything is taken: a refusal leaves the window as it was */
    long long requested = 0;
    if (requested_arg != Py_None) {
        requested = PyLong_AsLongLong(requested_arg);
        if (requested == -1 && PyErr_Occurred())
            return NULL;
    }
    long long most = w->max;
    if (most < 1 || most > BOUND || requested > BOUND || charge > BOUND || charge < -BOUND ||
            w->granted > BOUND || w->granted < -BOUND || w->range > BOUND || w->range < -BOUND) {
        /* (never so: a window's max is at least 1 (CreditWindow refuses less), the counts are
        16-bit fields, and what is granted lies within the window; far from 64-bit overflow) */
        PyErr_SetString(PyExc_OverflowError, "take: the window's state or the request is out of range");
        return NULL;
    }
    int usual = 0;
    if (message_id != Py_None && charge <= 1 && w->granted && !w->either_first) {
        int overflow;
        long long id = PyLong_AsLongLongAndOverflow(message_id, &overflow);
        if (id == -1 && PyErr_Occurred())
            return NULL;
        usual = !overflow && id == w->low && w->low < LLONG_MAX;
    }
    if (usual) {
        /* the usual request: the next MessageId, one credit */
        w->granted -= 1;
        w->low += 1;
        w->range -= 1;
        if (slide(w) < 0)
            return NULL;
    } else if (message_id != Py_None) {
        PyObject *ok = PyObject_CallMethodObjArgs((PyObject *)w, s_consume_any, message_id, args[1], NULL);
        if (ok == NULL)
            return NULL;
        int truth = PyObject_IsTrue(ok);
        Py_DECREF(ok);
        if (truth < 0)
            return NULL;
        if (!truth)
            return PyLong_FromLong(-1);
    }
    if (requested_arg == Py_None)
        return PyLong_FromLong(0);
    if (requested < 1)
        requested = 1;
    /* Samba's scaling: all that is asked while the client holds little, less and less as what
    it holds approaches the maximum, never less than one */
    long long scaled = floor_div((16 - floor_div(w->granted * 16, most)) * requested, 16);
    if (scaled < charge)
        scaled = charge;
    if (scaled < 1)
        scaled = 1;
    long long room = most - w->range;
    long long give = scaled < room ? scaled : room;
    w->granted += give;
    w->range += give;
    return PyLong_FromLongLong(give);
}

static int window_traverse(Window *w, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->used);
    return 0;
}

static int window_clear(Window *w) {
    Py_CLEAR(w->used);
    return 0;
}

static void window_dealloc(Window *w) {
    PyTypeObject *type = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    window_clear(w);
    type->tp_free((PyObject *)w);
    Py_DECREF(type);
}

static PyMethodDef window_methods[] = {
    {"take", (PyCFunction)(void (*)(void))window_take, METH_FASTCALL,
     "take(message_id, charge, requested) -> int: the request's MessageIds consumed (none "
     "where message_id is None), then its response's credits granted (none where requested "
     "is None: 0); -1 where its ids are outside the window or used already"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef window_members[] = {
    {"max", T_LONGLONG, offsetof(Window, max), 0, "the most MessageIds the window spans"},
    {"low", T_LONGLONG, offsetof(Window, low), 0, "the lowest MessageId not yet used"},
    {"range", T_LONGLONG, offsetof(Window, range), 0, "MessageIds low .. low + range - 1 are granted"},
    {"granted", T_LONGLONG, offsetof(Window, granted), 0, "of those, the ones the client may still use"},
    {"_used", T_OBJECT_EX, offsetof(Window, used), 0, "used MessageIds above low"},
    {"_either_first", T_BOOL, offsetof(Window, either_first), 0, "MessageId 0 or 1 first (after SMB1)"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot window_slots[] = {
    {Py_tp_doc, "The state of a connection's credit window and its take (smb.credits.CreditWindow)"},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, window_dealloc},
    {Py_tp_traverse, window_traverse},
    {Py_tp_clear, window_clear},
    {Py_tp_methods, window_methods},
    {Py_tp_members, window_members},
    {0, NULL},
};

static PyType_Spec window_spec = {
    .name = "smbring._wire.CreditWindowBase",
    .basicsize = sizeof(Window),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = window_slots,
};

PyObject *wire_credit_window_type(void) {
    s_consume_any = PyUnicode_InternFromString("_consume_any");
    if (s_consume_any == NULL)
        return NULL;
    return PyType_FromSpec(&window_spec);
}
