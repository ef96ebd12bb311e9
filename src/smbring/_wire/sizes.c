/* smbring._wire.check_sizes: the sizes a request states, checked before its handler reads
 * its body (MS-SMB2 3.3.5.2.x; as ksmbd's smb2misc.c checks them before dispatch). What
 * Connection._one did in Python for every request, ~100 bytecode instructions, in one call.
 *
 * check_sizes(msg, layout, command, dialect, charge, limits, budget_left) -> status
 *   msg:         the request (header and body), any object with the buffer protocol
 *   layout:      its command's (StructureSize, offset of the u32 of the bytes it sends, offset
 *                of the u32 of the response bytes it asks for), an offset 0 where it names
 *                none (smb.dispatch.Command.layout)
 *   command:     the header's Command
 *   dialect:     the connection's dialect (0x0202: one credit's 64 KiB at most, no charge)
 *   charge:      the header's CreditCharge
 *   limits:      the connection's smb.limits.Limits: max_read, max_write and max_trans are
 *                read from it only for a request of more than 64 KiB
 *   budget_left: what the frame's responses may still take (ResponseBudget)
 * Returns 0 when they pass; STATUS_INVALID_PARAMETER for a StructureSize that is not the
 * command's or a message too short for it, a size over MaxRead/Write/TransactSize, or a
 * CreditCharge too small for it; STATUS_INSUFFICIENT_RESOURCES when the response asked for
 * does not fit in what the frame's responses may still take. Checked in that order. */
#include "wire.h"

#define STATUS_INVALID_PARAMETER 0xC000000DUL
#define STATUS_INSUFFICIENT_RESOURCES 0xC000009AUL
#define READ 0x08
#define OPLOCK_BREAK 0x12
#define LEASE_BREAK_ACK_SIZE 36     /* OPLOCK_BREAK's other form */
#define CREDIT_SIZE 65536ULL        /* one credit's payload; all that SMB 2.0.2 allows */

/* An int argument in [0, most]; -1 with an exception set otherwise. */
static long long bounded(PyObject *v, long long most, const char *what)
{
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x < 0 || x > most) {
        PyErr_Format(PyExc_ValueError, "check_sizes: %s out of range", what);
        return -1;
    }
    return x;
}

/* The u32 size field at `at` (0: none), or -1 where the message is too short to hold it. */
static long long size_at(const unsigned char *p, Py_ssize_t len, long long at)
{
    if (at == 0)
        return 0;
    if (at + 4 > len)
        return -1;
    return le32(p + at);
}

/* MaxRead-, MaxWrite- or MaxTransactSize for the command (SMB 2.0.2: 64 KiB); -1 with an
 * exception set where limits does not say it. */
static long long max_io(PyObject *limits, long command, long dialect)
{
    if (dialect == SMB202)
        return (long long)CREDIT_SIZE;
    PyObject *v = PyObject_GetAttrString(limits, command == READ ? "max_read" :
                                         command == WRITE ? "max_write" : "max_trans");
    if (v == NULL)
        return -1;
    long long most = bounded(v, LLONG_MAX, "a limit");
    Py_DECREF(v);
    return most;
}

static unsigned long check(const unsigned char *p, Py_ssize_t len, const long long layout[3],
                           long command, long dialect, long long charge, PyObject *limits,
                           long long budget_left, int *failed)
{
    if (len < 66)
        return STATUS_INVALID_PARAMETER;
    long long size = layout[0];
    unsigned given = le16(p + 64);          /* the body's StructureSize */
    if (command == OPLOCK_BREAK && given == LEASE_BREAK_ACK_SIZE)
        size = LEASE_BREAK_ACK_SIZE;
    if (given != size || len < 64 + (size & ~1LL))
        return STATUS_INVALID_PARAMETER;
    long long sent = size_at(p, len, layout[1]), asked = size_at(p, len, layout[2]);
    if (sent < 0 || asked < 0)
        return STATUS_INVALID_PARAMETER;
    unsigned long long most = (unsigned long long)(sent > asked ? sent : asked);
    if (most > CREDIT_SIZE) {
        long long limit = max_io(limits, command, dialect);
        if (limit < 0) {
            *failed = 1;
            return 0;
        }
        if (most > (unsigned long long)limit)
            return STATUS_INVALID_PARAMETER;
        /* the CreditCharge it needs: a credit per 64 KiB (MS-SMB2 3.3.5.2.5) */
        if (dialect > SMB202 && (most - 1) / CREDIT_SIZE + 1 > (unsigned long long)(charge ? charge : 1))
            return STATUS_INVALID_PARAMETER;
    }
    if (asked > budget_left)
        return STATUS_INSUFFICIENT_RESOURCES;
    return 0;
}

PyObject *wire_check_sizes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "check_sizes(msg, layout, command, dialect, charge, limits, "
                                         "budget_left) takes 7 arguments");
        return NULL;
    }
    PyObject *layout_arg = args[1];
    if (!PyTuple_Check(layout_arg) || PyTuple_GET_SIZE(layout_arg) != 3) {
        PyErr_SetString(PyExc_TypeError, "check_sizes: layout must be a tuple of 3 ints");
        return NULL;
    }
    long long layout[3];
    for (int i = 0; i < 3; i++) {
        /* (a StructureSize is 16 bits; an offset lies within the 64 KiB a body's fixed part
         * has at most) */
        layout[i] = bounded(PyTuple_GET_ITEM(layout_arg, i), 0xFFFF, "a layout field");
        if (layout[i] < 0)
            return NULL;
    }
    long long command = bounded(args[2], 0xFFFF, "command");
    long long dialect = command < 0 ? -1 : bounded(args[3], 0xFFFF, "dialect");
    long long charge = dialect < 0 ? -1 : bounded(args[4], 0xFFFF, "charge");
    if (charge < 0)
        return NULL;
    long long budget_left = PyLong_AsLongLong(args[6]);
    if (budget_left == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int failed = 0;
    unsigned long status = check(view.buf, view.len, layout, (long)command, (long)dialect, charge,
                                 args[5], budget_left, &failed);
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    return PyLong_FromUnsignedLong(status);
}
