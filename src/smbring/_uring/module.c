/* placeholder while the engine is written */
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "smbring._uring", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__uring(void) { return PyModule_Create(&mod); }
