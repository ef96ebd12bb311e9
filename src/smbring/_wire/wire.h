/* smbring._wire: what its source files share (the module itself is made in header.c). */
#ifndef SMBRING_WIRE_H
#define SMBRING_WIRE_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

/* little-endian fields of the wire, read and written */
static inline uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }
static inline void put16(unsigned char *p, uint64_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static inline void put32(unsigned char *p, uint64_t v) { put16(p, v); put16(p + 2, v >> 16); }
static inline void put64(unsigned char *p, uint64_t v) { put32(p, v); put32(p + 4, v >> 32); }

/* the SMB2 header (MS-SMB2 2.2.1) as more than one file reads it */
#define HEADER_SIZE 64
#define SMB202 0x0202               /* the dialect whose requests are charged one credit each */
#define FLAGS_SERVER_TO_REDIR 0x1   /* a response's */

/* the SMB2 commands (MS-SMB2 2.2.1.2) that more than one file names */
#define WRITE 0x09
#define ECHO 0x0D

/* whether the 64 bytes at h start as an SMB2 header does: its ProtocolId and StructureSize */
static inline int is_smb2_header(const unsigned char *h) {
    return memcmp(h, "\xfeSMB", 4) == 0 && le16(h + 4) == HEADER_SIZE;
}

/* the truth of obj.name: 1, 0, or -1 with an exception */
static inline int attr_truth(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* a method descriptor's tp_descr_get: set as a class attribute, the object binds as a method
   does (with Py_TPFLAGS_METHOD_DESCRIPTOR a call through an instance skips the bound method
   altogether): OpenFinder's and FrameHandler's */
static inline PyObject *wire_bind_as_method(PyObject *self, PyObject *obj, PyObject *type) {
    (void)type;
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

/* slots.c: the offset of cls's own writable object slot `name` (0, or -1 with TypeError), and
   whether cls's instances can be allocated as those of a class with slots (1, or 0 with
   TypeError); the type SlotMaker (a new reference, or NULL with an exception) */
int wire_slot_offset(PyTypeObject *cls, PyObject *name, Py_ssize_t *offset);
int wire_allocatable(PyTypeObject *cls);
PyObject *wire_slot_maker_type(void);

/* open_for.c: the type OpenFinder (a new reference, or NULL with an exception) */
PyObject *wire_open_finder_type(void);

/* frames.c: the type FrameHandler (a new reference, or NULL with an exception) */
PyObject *wire_frame_handler_type(void);

/* header.c: a Header of 64 bytes known to be an SMB2 header, and a response's header as it
   starts (codec: a HeaderCodec; a new reference, or NULL with an exception) */
PyObject *wire_header_from(PyObject *codec, const unsigned char *h);
PyObject *wire_header_response_to(PyObject *codec, PyObject *req);

/* admit.c: the type Admission (a new reference, or NULL with an exception) */
PyObject *wire_admission_type(void);

/* echo.c: answer_echoes, and its names looked up once (0, or -1 with an exception) */
int wire_echo_init(void);
PyObject *wire_answer_echoes(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* sizes.c: check_sizes, a request's sizes checked before its handler */
PyObject *wire_check_sizes(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* credits.c: the type CreditWindowBase (a new reference, or NULL with an exception) */
PyObject *wire_credit_window_type(void);

/* receive.c: the type ReceiveBuffer (a new reference, or NULL with an exception) */
PyObject *wire_receive_buffer_type(void);

#endif
