/*
 * smbring._events: the module, with the Context and event types and the flag constants.
 */
#include "events.h"

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "smbring._events", "tevent-style event loop core (see smbring.events)",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__events(void)
{
    PyTypeObject *types[] = {&ContextType, &FdEventType, &TimerType, &ImmediateType, &SignalType};
    for (size_t i = 0; i < 5; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    const char *names[] = {"Context", "FdEvent", "Timer", "Immediate", "Signal"};
    for (size_t i = 0; i < 5; i++)
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0)
            goto fail;
    if (PyModule_AddIntConstant(m, "READ", EV_READ) < 0 ||
        PyModule_AddIntConstant(m, "WRITE", EV_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "ERROR", EV_ERROR) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
