/*
 * smbring._wire: instances of a dataclass with slots made without its __init__.
 *
 * A dataclass's __init__ assigns every field in Python, one store after another: for
 * smb.state.Open, forty of them, on every CREATE, however few the caller names. Here the
 * values go straight into the slots of the instance as it is allocated.
 *
 *   SlotMaker(cls, required, defaults, factories) -> maker
 *       cls: a class with slots (each field must be a plain object slot of cls's own, else
 *       TypeError; at most 64 fields). required: the names of the fields each instance must
 *       be given; defaults: (name, value) pairs, the value shared by every instance that is
 *       not given one; factories: (name, callable) pairs, called with no arguments for each
 *       instance not given one. (smb.state.slot_maker makes them from a dataclass's fields.)
 *   maker.make(**values) -> an instance of cls
 *       As cls(**values) would make it where __init__ is the dataclass's own and does nothing
 *       more: TypeError for a positional argument, a name that is no field, or a field
 *       without a default not given.
 *
 * A maker is initialised once (TypeError again) and keeps no state between calls beyond
 * what it was given.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "wire.h"

#define MAX_FIELDS 64       /* a call's values are kept on the stack */

int wire_slot_offset(PyTypeObject *cls, PyObject *name, Py_ssize_t *offset) {
    PyObject *descr = PyDict_GetItemWithError(cls->tp_dict, name);     /* borrowed */
    if (descr == NULL && PyErr_Occurred())
        return -1;
    /* the descriptor must be one of cls's own slots: another class's, set on cls as an
       attribute, has that class's offsets, which in cls's instances may be anything (a
       base's C fields: writing a field there crashed the interpreter) */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyDescrObject *)descr)->d_type != cls ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX ||
            (((PyMemberDescrObject *)descr)->d_member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not a writable slot", cls->tp_name, name);
        return -1;
    }
    Py_ssize_t at = ((PyMemberDescrObject *)descr)->d_member->offset;
    if (at < (Py_ssize_t)sizeof(PyObject) || at + (Py_ssize_t)sizeof(PyObject *) > cls->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%s.%U is not a slot of its instances", cls->tp_name, name);
        return -1;
    }
    *offset = at;
    return 0;
}

int wire_allocatable(PyTypeObject *cls) {
    if (cls->tp_alloc == NULL || cls->tp_itemsize != 0) {
        PyErr_Format(PyExc_TypeError, "%s cannot be allocated here", cls->tp_name);
        return 0;
    }
    return 1;
}

typedef struct {
    PyObject *name;         /* interned */
    PyObject *fallback;     /* the default, or the factory (`made`), or NULL: must be given */
    int made;
    Py_ssize_t offset;
} Field;

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t n;
    Field *fields;
} SlotMaker;

static int maker_clear(SlotMaker *self) {
    Py_CLEAR(self->cls);
    for (Py_ssize_t i = 0; self->fields != NULL && i < self->n; i++) {
        Py_CLEAR(self->fields[i].name);
        Py_CLEAR(self->fields[i].fallback);
    }
    PyMem_Free(self->fields);
    self->fields = NULL;
    self->n = 0;
    return 0;
}

/* a field named `name`, its slot looked up in cls, with its fallback (a new reference or
   NULL): 0, or -1 with an exception */
static int field_from(PyTypeObject *cls, PyObject *name, PyObject *fallback, int made, Field *field) {
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "a field's name is a str");
        return -1;
    }
    if (made && !PyCallable_Check(fallback)) {
        PyErr_Format(PyExc_TypeError, "field %U's factory is not callable", name);
        return -1;
    }
    if (wire_slot_offset(cls, name, &field->offset) < 0)
        return -1;
    Py_INCREF(name);
    PyUnicode_InternInPlace(&name);
    field->name = name;
    field->made = made;
    Py_XINCREF(fallback);
    field->fallback = fallback;
    return 0;
}

/* the fields of the group `specs` (0: names; 1: (name, default); 2: (name, factory)) added
   from self->fields[*n]: 0, or -1 with an exception */
static int add_fields(SlotMaker *self, PyObject *specs, int group, Py_ssize_t *n) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(specs); k++) {
        PyObject *spec = PyTuple_GET_ITEM(specs, k), *name = spec, *fallback = NULL;
        if (group && (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2)) {
            PyErr_SetString(PyExc_TypeError, "a default or a factory is a (name, value) pair");
            return -1;
        }
        if (group) {
            name = PyTuple_GET_ITEM(spec, 0);
            fallback = PyTuple_GET_ITEM(spec, 1);
        }
        Field *field = &self->fields[*n];
        if (field_from(self->cls, name, fallback, group == 2, field) < 0)
            return -1;
        ++*n;
        for (Py_ssize_t j = 0; j < *n - 1; j++) {
            if (self->fields[j].offset == field->offset) {
                PyErr_Format(PyExc_TypeError, "field %U named twice", field->name);
                return -1;
            }
        }
    }
    return 0;
}

static int maker_init(SlotMaker *self, PyObject *args, PyObject *kwargs) {
    PyTypeObject *cls;
    PyObject *required, *defaults, *factories;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "SlotMaker takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O!:SlotMaker", &PyType_Type, &cls, &PyTuple_Type, &required,
                          &PyTuple_Type, &defaults, &PyTuple_Type, &factories))
        return -1;
    if (self->cls != NULL) {
        /* (its fields stay as they are while a factory it calls runs, whatever that does) */
        PyErr_SetString(PyExc_TypeError, "SlotMaker already initialised");
        return -1;
    }
    if (!wire_allocatable(cls))
        return -1;
    Py_ssize_t total = PyTuple_GET_SIZE(required) + PyTuple_GET_SIZE(defaults) + PyTuple_GET_SIZE(factories);
    if (total > MAX_FIELDS) {
        PyErr_Format(PyExc_TypeError, "SlotMaker: %zd fields, more than %d", total, MAX_FIELDS);
        return -1;
    }
    if ((self->fields = PyMem_Calloc(total ? total : 1, sizeof(Field))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(cls);
    self->cls = cls;
    Py_ssize_t n = 0;
    int failed = add_fields(self, required, 0, &n) < 0 || add_fields(self, defaults, 1, &n) < 0 ||
                 add_fields(self, factories, 2, &n) < 0;
    self->n = n;        /* (those made: maker_clear releases them) */
    if (failed) {
        maker_clear(self);
        return -1;
    }
    return 0;
}

/* which field `name` is, or -1 (no exception) */
static Py_ssize_t field_named(SlotMaker *self, PyObject *name) {
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (self->fields[i].name == name)       /* (a call's keywords are interned: the usual case) */
            return i;
    }
    for (Py_ssize_t i = 0; i < self->n; i++) {
        if (PyUnicode_Check(name) && PyUnicode_Compare(self->fields[i].name, name) == 0)
            return i;
    }
    return -1;
}

static PyObject *maker_make(SlotMaker *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (self->cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SlotMaker not initialised");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf)) {
        PyErr_Format(PyExc_TypeError, "%s: fields are given by name", self->cls->tp_name);
        return NULL;
    }
    PyObject *values[MAX_FIELDS] = {NULL}, *obj = NULL;
    Py_ssize_t owned = 0;       /* values[..owned] are references of this call's own */
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = field_named(self, name);
        if (i < 0) {
            PyErr_Format(PyExc_TypeError, "%s has no field %R", self->cls->tp_name, name);
            return NULL;
        }
        values[i] = args[k];        /* borrowed (a call cannot name a field twice) */
    }
    /* the factories' values made before the instance: what they run (a collection, even)
       never sees it half made */
    for (; owned < self->n; owned++) {
        Field *f = &self->fields[owned];
        PyObject **value = &values[owned];
        if (*value != NULL) {
            Py_INCREF(*value);
        } else if (f->fallback == NULL) {
            PyErr_Format(PyExc_TypeError, "%s: field %U not given", self->cls->tp_name, f->name);
            break;
        } else if (!f->made) {
            Py_INCREF(f->fallback);
            *value = f->fallback;
        } else if ((*value = PyObject_CallNoArgs(f->fallback)) == NULL) {
            break;
        }
    }
    if (owned == self->n && (obj = self->cls->tp_alloc(self->cls, 0)) != NULL) {
        for (Py_ssize_t i = 0; i < self->n; i++)   /* (tp_alloc zeroed them: nothing to release) */
            *(PyObject **)((char *)obj + self->fields[i].offset) = values[i];
        owned = 0;      /* (the instance's now) */
    }
    for (Py_ssize_t i = 0; i < owned; i++)
        Py_DECREF(values[i]);
    return obj;
}

static int maker_traverse(SlotMaker *self, visitproc visit, void *arg) {
    Py_VISIT(self->cls);
    for (Py_ssize_t i = 0; self->fields != NULL && i < self->n; i++)
        Py_VISIT(self->fields[i].fallback);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static void maker_dealloc(SlotMaker *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    maker_clear(self);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef maker_methods[] = {
    {"make", (PyCFunction)(void (*)(void))maker_make, METH_FASTCALL | METH_KEYWORDS,
     "make(**values) -> an instance of the class, as its dataclass __init__ makes it"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot maker_slots[] = {
    {Py_tp_doc, "Instances of a dataclass with slots made without its __init__ (smb.state)"},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, maker_init},
    {Py_tp_dealloc, maker_dealloc},
    {Py_tp_traverse, maker_traverse},
    {Py_tp_clear, maker_clear},
    {Py_tp_methods, maker_methods},
    {0, NULL},
};

static PyType_Spec maker_spec = {
    .name = "smbring._wire.SlotMaker",
    .basicsize = sizeof(SlotMaker),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = maker_slots,
};

PyObject *wire_slot_maker_type(void) {
    return PyType_FromSpec(&maker_spec);
}
