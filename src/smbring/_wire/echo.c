/*
 * smbring._wire.answer_echoes: plain ECHO requests answered without a Python call each.
 *
 * An ECHO needs no session, tree or file, and its answer is fixed: what costs is the way
 * there (the header object, the credit window's methods, the dispatch table, the response's
 * header object, the effect, a send). At one request in flight a server pays that whole way
 * for every request; here the frames a receive brought in are checked and answered in one
 * call, with exactly the checks and the credit accounting the protocol core
 * (smb.connection, smb.credits) gives them. Whatever is not the plainest ECHO stops the
 * call before that frame, which then goes the core's way: so this path decides nothing the
 * core could decide otherwise, and the core sees every frame this one refuses.
 *
 *   answer_echoes(buf, start, end, max_frames, max_size, window, multi_credit, sessions)
 *       -> None | (next_start, count, responses)
 *
 *   buf[start:end]: received bytes, NetBIOS session messages one after another. Frames are
 *   taken from `start` while each is, all of it received:
 *     - a NetBIOS session message (first byte 0) of 68 to `max_size` bytes (the frame size
 *       the connection takes whatever its logon state: server.check_frame_size);
 *     - one SMB2 request: ProtocolId 0xFE 'S' 'M' 'B', StructureSize 64, Command ECHO,
 *       no Flags but a priority (not signed, not related, not async, no DFS, no replay),
 *       NextCommand 0, SessionId 0 and no session with id 0 in `sessions` (so the answer is
 *       neither signed nor sealed: Connection._response), the body's StructureSize 4;
 *     - a MessageId the credit window takes the usual way (CreditWindow.consume's first
 *       branch: the window's next id, one credit, credits granted, no id used out of order,
 *       not the id that may follow an SMB1 NEGOTIATE);
 *   and at most `max_frames` of them. `window` is the connection's smb.credits.CreditWindow:
 *   its low, range and granted are read before the first frame and written back after the
 *   last (nothing else runs in between), each frame consuming one credit and granting
 *   what CreditWindow.grant grants (`multi_credit`: the dialect is above 2.0.2, where a
 *   CreditCharge of 0 or 1 costs one credit; before it, any charge costs one).
 *   Returns None when the first frame is not taken (nothing changed), else the offset after
 *   the last frame taken, how many, and their responses with their NetBIOS prefixes, as
 *   Connection._response makes each: Flags SERVER_TO_REDIR, the request's MessageId,
 *   CreditCharge and TreeId, the credits granted, StructureSize 4.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "wire.h"

#define ECHO_REQUEST 68         /* the header and the request's 4 bytes */
#define ECHO_RESPONSE 68
#define FRAME_OUT (4 + ECHO_RESPONSE)
#define FLAGS_PRIORITY_MASK 0x70u   /* (SMB 3.1.1's priorities: they change nothing here) */
#define MAX_FRAMES 64           /* the most answered in one call (the receiver asks for fewer) */
#define WINDOW_MOST ((int64_t)1 << 62)

/* An attribute of the window as a C integer in [0, WINDOW_MOST); 0 when it is not one
   (the caller then answers nothing: the core's way handles whatever this is). */
static int window_int(PyObject *window, PyObject *name, int64_t *out) {
    PyObject *value = PyObject_GetAttr(window, name);
    if (value == NULL)
        return -1;
    int ok = 0;
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(value);
            return -1;
        }
        if (!overflow && v >= 0 && v < WINDOW_MOST) {
            *out = v;
            ok = 1;
        }
    }
    Py_DECREF(value);
    return ok;
}

/* Whether the attribute is false (an empty set, False); -1 with an exception. */
static int window_false(PyObject *window, PyObject *name) {
    int truth = attr_truth(window, name);
    return truth < 0 ? -1 : !truth;
}

static PyObject *s_low, *s_range, *s_granted, *s_max, *s_used, *s_either_first;

int wire_echo_init(void) {
    s_low = PyUnicode_InternFromString("low");
    s_range = PyUnicode_InternFromString("range");
    s_granted = PyUnicode_InternFromString("granted");
    s_max = PyUnicode_InternFromString("max");
    s_used = PyUnicode_InternFromString("_used");
    s_either_first = PyUnicode_InternFromString("_either_first");
    return s_low && s_range && s_granted && s_max && s_used && s_either_first ? 0 : -1;
}

PyObject *wire_answer_echoes(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "answer_echoes(buf, start, end, max_frames, max_size, window, multi_credit, sessions)");
        return NULL;
    }
    PyObject *window = args[5], *sessions = args[7];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]),
               max_frames = PyLong_AsSsize_t(args[3]), max_size = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    int multi_credit = PyObject_IsTrue(args[6]);
    if (multi_credit < 0)
        return NULL;
    if (!PyDict_Check(sessions)) {
        PyErr_SetString(PyExc_TypeError, "answer_echoes: sessions must be a dict");
        return NULL;
    }
    if (max_frames > MAX_FRAMES)
        max_frames = MAX_FRAMES;
    if (max_frames < 1 || max_size < ECHO_REQUEST || start < 0 || end - start < 4 + ECHO_REQUEST)
        Py_RETURN_NONE;

    /* an ECHO with SessionId 0 is answered unsigned only while no session has that id */
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL)
        return NULL;
    int session_zero = PyDict_Contains(sessions, zero);
    Py_DECREF(zero);
    if (session_zero != 0)
        return session_zero < 0 ? NULL : Py_NewRef(Py_None);

    /* the window: only as CreditWindow.consume's first branch takes a request */
    int64_t low, range, granted, most;
    int got;
    if ((got = window_int(window, s_low, &low)) <= 0 || (got = window_int(window, s_range, &range)) <= 0 ||
            (got = window_int(window, s_granted, &granted)) <= 0 || (got = window_int(window, s_max, &most)) <= 0)
        return got < 0 ? NULL : Py_NewRef(Py_None);
    int plain = window_false(window, s_used);
    if (plain > 0)
        plain = window_false(window, s_either_first);
    if (plain <= 0)
        return plain < 0 ? NULL : Py_NewRef(Py_None);
    if (most < 1 || range > most || granted > range)
        Py_RETURN_NONE;             /* (never so: the core's way says what it makes of it) */

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (end > view.len)
        end = view.len;
    const unsigned char *in = view.buf;
    unsigned char out[MAX_FRAMES * FRAME_OUT];
    Py_ssize_t at = start, count = 0;
    while (count < max_frames && end - at >= 4 + ECHO_REQUEST) {
        const unsigned char *nb = in + at;
        Py_ssize_t size = (Py_ssize_t)nb[1] << 16 | (Py_ssize_t)nb[2] << 8 | nb[3];
        if (nb[0] != 0 || size < ECHO_REQUEST || size > max_size || size > end - at - 4)
            break;
        const unsigned char *h = nb + 4;
        if (!is_smb2_header(h) || le16(h + 12) != ECHO ||
                (le32(h + 16) & ~FLAGS_PRIORITY_MASK) != 0 || le32(h + 20) != 0 || le64(h + 40) != 0 || le16(h + 64) != 4)
            break;
        uint16_t charge = le16(h + 6);
        uint64_t message_id = le64(h + 24);
        if ((uint64_t)low != message_id || (multi_credit && charge > 1) || granted < 1)
            break;
        /* CreditWindow.consume, its first branch (no id used out of order: checked above) */
        granted -= 1;
        low += 1;
        range -= 1;
        /* CreditWindow.grant(requested, 1) */
        int64_t requested = le16(h + 14);
        if (requested < 1)
            requested = 1;
        int64_t scaled = (16 - granted * 16 / most) * requested / 16;
        if (scaled < 1)
            scaled = 1;
        int64_t room = most - range;
        int64_t give = scaled < room ? scaled : room;
        granted += give;
        range += give;
        /* the response, as Connection._response packs it */
        unsigned char *r = out + count * FRAME_OUT;
        memset(r, 0, FRAME_OUT);
        r[3] = ECHO_RESPONSE;               /* the NetBIOS prefix: 0, then the 24-bit length */
        unsigned char *p = r + 4;
        memcpy(p, "\xfeSMB", 4);
        put16(p + 4, 64);
        put16(p + 6, charge);
        put16(p + 12, ECHO);
        put16(p + 14, (uint64_t)give);
        put32(p + 16, FLAGS_SERVER_TO_REDIR);
        put64(p + 24, message_id);
        put32(p + 36, le32(h + 36));         /* TreeId (Reserved, the process id, stays 0) */
        put16(p + 64, 4);                    /* StructureSize 4, Reserved 0 */
        at += 4 + size;
        count += 1;
    }
    PyBuffer_Release(&view);
    if (count == 0)
        Py_RETURN_NONE;
    /* everything that may fail for want of memory is made before the window changes */
    PyObject *responses = PyBytes_FromStringAndSize((const char *)out, count * FRAME_OUT);
    PyObject *result = responses == NULL ? NULL : Py_BuildValue("nnN", at, count, responses);
    PyObject *v_granted = PyLong_FromLongLong(granted), *v_low = PyLong_FromLongLong(low),
             *v_range = PyLong_FromLongLong(range);
    if (result == NULL || v_granted == NULL || v_low == NULL || v_range == NULL ||
            PyObject_SetAttr(window, s_granted, v_granted) < 0 || PyObject_SetAttr(window, s_low, v_low) < 0 ||
            PyObject_SetAttr(window, s_range, v_range) < 0)
        Py_CLEAR(result);       /* (the connection ends: its task sees the exception) */
    Py_XDECREF(v_granted);
    Py_XDECREF(v_low);
    Py_XDECREF(v_range);
    return result;
}
