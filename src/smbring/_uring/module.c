/*
 * smbring._uring: module set-up, names, constants, and the few synchronous helpers that
 * need no ring (openat2 for the VFS fallback, setup-flag probing for `smbring features`).
 */
#include "capi.h"
#include "kernel.h"
#include "ops.h"
#include "register.h"
#include "ring_object.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* try_setup(flags, entries=8) -> 0 or errno: whether the kernel accepts these setup flags. */
static PyObject *mod_try_setup(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned flags, entries = 8;
    if (!PyArg_ParseTuple(args, "I|I:try_setup", &flags, &entries))
        return NULL;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (flags & IORING_SETUP_CQSIZE)
        p.cq_entries = entries * 2;
    int fd = sys_io_uring_setup(entries, &p);
    if (fd < 0)
        return PyLong_FromLong(errno);
    close(fd);
    return PyLong_FromLong(0);
}

/* How often an openat2 that met a rename elsewhere in the system while resolving a ".." is
 * tried again: with RESOLVE_BENEATH or RESOLVE_IN_ROOT the kernel answers EAGAIN when any
 * rename (or mount) happened meanwhile, as it cannot tell that the ".." stayed inside
 * (openat2(2): "the caller may choose to retry"). Under a steady stream of renames about one
 * such open in a hundred fails once; a bound, for the EAGAIN that stays (a non-blocking open
 * of a file under a lease, RESOLVE_CACHED). */
#define OPENAT2_RACE_TRIES 32

/* openat2(dirfd, path, flags=O_RDONLY, mode=0, resolve=0) -> fd, synchronously: the safe
 * path resolution the VFS needs even where io_uring is unavailable. */
static PyObject *mod_openat2(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"dirfd", "path", "flags", "mode", "resolve", NULL};
    int dirfd, flags = O_RDONLY, mode = 0;
    unsigned long long resolve = 0;
    PyObject *path;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iO&|iiK:openat2", kwlist, &dirfd,
                                     PyUnicode_FSConverter, &path, &flags, &mode, &resolve))
        return NULL;
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(unsigned)(flags | O_CLOEXEC);
    how.mode = sr_open_takes_mode(flags) ? (uint64_t)mode : 0;
    how.resolve = resolve;
    int fd;
    int tries = (resolve & (RESOLVE_BENEATH | RESOLVE_IN_ROOT)) && !(resolve & RESOLVE_CACHED)
                ? OPENAT2_RACE_TRIES : 1;
    Py_BEGIN_ALLOW_THREADS
    do {
        fd = (int)syscall(__NR_openat2, dirfd, PyBytes_AS_STRING(path), &how, sizeof(how));
    } while (fd < 0 && errno == EAGAIN && --tries > 0);
    Py_END_ALLOW_THREADS
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    return PyLong_FromLong(fd);
}

/* set_thread_credentials(uid, gid, groups): the calling thread's effective uid and gid and its
 * supplementary groups, with the raw system calls, which act on this thread only (glibc's
 * wrappers change every thread of the process). The real and saved ids stay as they are, so a
 * process started as root can come back (as Samba's become_user does): first to euid 0, which
 * restores the capabilities to change groups and gid, then the groups, the gid, the uid last.
 * On a failure after the first step the thread is left with euid 0 (its groups and gid
 * unknown: set them again) and the error raised. */
static PyObject *mod_set_thread_credentials(PyObject *self, PyObject *args)
{
    (void)self;
    long uid, gid;
    PyObject *groups;
    if (!PyArg_ParseTuple(args, "llO:set_thread_credentials", &uid, &gid, &groups))
        return NULL;
    if (uid < 0 || uid >= UINT32_MAX || gid < 0 || gid >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "uid and gid must be valid ids");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(groups, "groups must be a sequence of gids");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > 65536) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "at most 65536 supplementary groups");
        return NULL;
    }
    gid_t small[32], *list = n <= 32 ? small : PyMem_Malloc((size_t)n * sizeof(gid_t));
    if (!list) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long g = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (g < 0 || g >= UINT32_MAX) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "groups must be valid gids");
            goto fail;
        }
        list[i] = (gid_t)g;
    }
    const char *step = "setresuid(-1, 0, -1)";
    if (syscall(SYS_setresuid, -1, 0, -1) != 0) {
        sr_oserror(errno, step);        /* nothing changed: not started as root */
        goto fail;
    }
    step = "setgroups";
    if (syscall(SYS_setgroups, (size_t)n, list) != 0)
        goto os_fail;
    step = "setresgid";
    if (syscall(SYS_setresgid, -1, (gid_t)gid, -1) != 0)
        goto os_fail;
    step = "setresuid";
    if (uid != 0 && syscall(SYS_setresuid, -1, (uid_t)uid, -1) != 0)
        goto os_fail;
    if (list != small)
        PyMem_Free(list);
    Py_DECREF(fast);
    Py_RETURN_NONE;
os_fail: {
        int err = errno;
        if (syscall(SYS_setresuid, -1, 0, -1) != 0) {
            /* neither the user asked for nor root: never go on acting as someone else */
            Py_FatalError("set_thread_credentials: cannot return to euid 0");
        }
        sr_oserror(err, step);
    }
fail:
    if (list != small)
        PyMem_Free(list);
    Py_DECREF(fast);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"set_thread_credentials", mod_set_thread_credentials, METH_VARARGS,
     "set_thread_credentials(uid, gid, groups)\n\nThe calling thread's effective uid, gid and "
     "supplementary groups (real and saved ids unchanged); needs a saved or real uid 0."},
    {"try_setup", mod_try_setup, METH_VARARGS,
     "try_setup(flags, entries=8) -> int\n\n0 if io_uring_setup accepts flags, else the errno."},
    {"openat2", (PyCFunction)(void (*)(void))mod_openat2, METH_VARARGS | METH_KEYWORDS,
     "openat2(dirfd, path, flags=O_RDONLY, mode=0, resolve=0) -> fd (synchronous)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "smbring._uring",
    "The io_uring engine's C core. Use it through smbring.uring.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

static int add_int(PyObject *m, const char *name, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (!o)
        return -1;
    int rc = PyModule_AddObject(m, name, o);
    if (rc < 0)
        Py_DECREF(o);
    return rc;
}

PyMODINIT_FUNC PyInit__uring(void)
{
    ring_watch_forks();
    if (ring_type_ready() < 0 || request_types_ready() < 0 || PyType_Ready(&BufRingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    if (base_add_exceptions(m) < 0 || ops_add_types(m) < 0 ||
        PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0 ||
        PyModule_AddObjectRef(m, "Request", (PyObject *)&RequestType) < 0 ||
        PyModule_AddObjectRef(m, "Batch", (PyObject *)&BatchType) < 0 ||
        PyModule_AddObjectRef(m, "BufRing", (PyObject *)&BufRingType) < 0)
        goto fail;
    PyObject *names = PyTuple_New(SR_OP_COUNT);
    if (!names)
        goto fail;
    for (int i = 0; i < SR_OP_COUNT; i++) {
        PyObject *s = sr_op_names[i] ? PyUnicode_FromString(sr_op_names[i]) : Py_NewRef(Py_None);
        if (!s) {
            Py_DECREF(names);
            goto fail;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    if (PyModule_AddObject(m, "OP_NAMES", names) < 0) {
        Py_DECREF(names);
        goto fail;
    }
    PyObject *capsule = PyCapsule_New((void *)&sr_capi, "smbring._uring._C_API", NULL);
    if (!capsule || PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        goto fail;
    }
    struct { const char *name; long long value; } constants[] = {
        {"FIXED_FILE", IOSQE_FIXED_FILE}, {"DRAIN", IOSQE_IO_DRAIN}, {"LINK", IOSQE_IO_LINK},
        {"HARDLINK", IOSQE_IO_HARDLINK}, {"ASYNC", IOSQE_ASYNC},
        {"CQE_F_BUFFER", IORING_CQE_F_BUFFER}, {"CQE_F_MORE", IORING_CQE_F_MORE},
        {"CQE_F_SOCK_NONEMPTY", IORING_CQE_F_SOCK_NONEMPTY}, {"CQE_F_NOTIF", IORING_CQE_F_NOTIF},
        {"SETUP_IOPOLL", IORING_SETUP_IOPOLL}, {"SETUP_SQPOLL", IORING_SETUP_SQPOLL},
        {"SETUP_CQSIZE", IORING_SETUP_CQSIZE}, {"SETUP_CLAMP", IORING_SETUP_CLAMP},
        {"SETUP_SUBMIT_ALL", IORING_SETUP_SUBMIT_ALL},
        {"SETUP_COOP_TASKRUN", IORING_SETUP_COOP_TASKRUN},
        {"SETUP_TASKRUN_FLAG", IORING_SETUP_TASKRUN_FLAG},
        {"SETUP_SINGLE_ISSUER", IORING_SETUP_SINGLE_ISSUER},
        {"SETUP_DEFER_TASKRUN", IORING_SETUP_DEFER_TASKRUN},
        {"RESOLVE_NO_XDEV", RESOLVE_NO_XDEV}, {"RESOLVE_NO_MAGICLINKS", RESOLVE_NO_MAGICLINKS},
        {"RESOLVE_NO_SYMLINKS", RESOLVE_NO_SYMLINKS}, {"RESOLVE_BENEATH", RESOLVE_BENEATH},
        {"RESOLVE_IN_ROOT", RESOLVE_IN_ROOT}, {"RESOLVE_CACHED", RESOLVE_CACHED},
        {"FSYNC_DATASYNC", IORING_FSYNC_DATASYNC},
        {"AT_FDCWD", AT_FDCWD}, {"AT_EMPTY_PATH", AT_EMPTY_PATH}, {"AT_REMOVEDIR", AT_REMOVEDIR},
        {"AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW},
        {"NOTIF_USAGE_ZC_COPIED", IORING_NOTIF_USAGE_ZC_COPIED},
    };
    for (size_t i = 0; i < sizeof(constants) / sizeof(constants[0]); i++)
        if (add_int(m, constants[i].name, constants[i].value) < 0)
            goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
