/*
 * The engine's base: its exceptions, OSError from an errno, and the op names.
 */
#include "base.h"

#include <string.h>

PyObject *UringUnavailable, *UnsupportedOp;

int base_add_exceptions(PyObject *module)
{
    UringUnavailable = PyErr_NewExceptionWithDoc(
        "smbring._uring.UringUnavailable",
        "io_uring cannot be used here: args are (errno, reason).", PyExc_OSError, NULL);
    UnsupportedOp = PyErr_NewExceptionWithDoc(
        "smbring._uring.UnsupportedOp", "The kernel lacks this io_uring op (see Ring.ops).",
        PyExc_NotImplementedError, NULL);
    if (!UringUnavailable || !UnsupportedOp)
        return -1;
    /* the module's references are its own: ours stay for the life of the process */
    if (PyModule_AddObjectRef(module, "UringUnavailable", UringUnavailable) < 0 ||
        PyModule_AddObjectRef(module, "UnsupportedOp", UnsupportedOp) < 0)
        return -1;
    return 0;
}

PyObject *sr_oserror(int err, const char *what)
{
    PyObject *args = Py_BuildValue("(is)", err, strerror(err));
    if (args) {
        PyObject *exc = PyObject_Call(PyExc_OSError, args, NULL);
        Py_DECREF(args);
        if (exc) {
            if (what) {
                PyObject *note = PyUnicode_FromString(what);
                if (note) {
                    PyObject_SetAttrString(exc, "filename", note);
                    Py_DECREF(note);
                }
            }
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    return NULL;
}

const char *const sr_op_names[SR_OP_COUNT] = {
    "nop", "readv", "writev", "fsync", "read_fixed", "write_fixed", "poll_add", "poll_remove",
    "sync_file_range", "sendmsg", "recvmsg", "timeout", "timeout_remove", "accept",
    "async_cancel", "link_timeout", "connect", "fallocate", "openat", "close", "files_update",
    "statx", "read", "write", "fadvise", "madvise", "send", "recv", "openat2", "epoll_ctl",
    "splice", "provide_buffers", "remove_buffers", "tee", "shutdown", "renameat", "unlinkat",
    "mkdirat", "symlinkat", "linkat", "msg_ring", "fsetxattr", "setxattr", "fgetxattr",
    "getxattr", "socket", "uring_cmd", "send_zc", "sendmsg_zc", "read_multishot", "waitid",
    "futex_wait", "futex_wake", "futex_waitv", "fixed_fd_install", "ftruncate", "bind", "listen",
    "recv_zc", "epoll_wait", "readv_fixed", "writev_fixed", "pipe",
};
