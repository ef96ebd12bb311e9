/*
 * smbring._dirent: directory listings in batches (QUERY_DIRECTORY of a large directory).
 *
 * Two functions, one per layer (a third, read_names, and get_xattr, below), meeting in a fixed-size binary record per entry (RECORD, a
 * struct format string the Python side packs and unpacks the same way):
 *
 *   stat_entries(dir_fd, names, start, count, xattr) -> (records, symlinks)
 *       The VFS's half, the only one that makes system calls: for each name, fstatat
 *       (AT_SYMLINK_NOFOLLOW, as os.stat) and its DOS information xattr, read with
 *       getxattrat(2) where the kernel has it (one path component looked up), else through
 *       /proc/self/fd/<dir_fd>/<name> as before. `symlinks`: the indexes of entries that are
 *       symlinks, which the caller resolves itself (beneath the share root).
 *
 *   encode_entries(records, names, start, klass, out, room, last, single, hide_dot,
 *                  shown, short_name) -> (index, last, status)
 *       (short_name: a callable giving a non-ASCII name's 8.3 name, or None: no 8.3 names)
 *       The protocol core's half, pure: appends MS-FSCC directory entries to the bytearray
 *       `out` exactly as smb.fileinfo.dir_entry builds them one by one, and stops where the
 *       Python code must take over (an entry it leaves to the general code: SLOW).
 *
 *   read_names(dir_fd) -> names
 *       A directory's names read with getdents64 straight on the descriptor (the case-
 *       insensitive lookup of a name a CREATE did not find: see vfs.posix.match_case).
 *
 *   get_xattr(fd, name) -> bytes | None
 *       An open file's extended attribute, None where the file has none of that name
 *       (ENODATA): os.getxattr raises an OSError for that, which costs several times the
 *       system call (a QUERY_INFO of a file made outside the server, which has no DOS
 *       information stored, asks for it every time). Other failures raise as os.getxattr's.
 *
 *   fstat(fd) -> Stat, lstat_at(dir_fd, name) -> Stat
 *       An open file's stat, an entry's (AT_SYMLINK_NOFOLLOW), with the attributes of
 *       os.stat_result that the server reads (st_mode ... st_ctime_ns, st_atime ...
 *       st_ctime as floats), the nanosecond times computed in C: os.stat_result builds
 *       them with big-integer arithmetic, most of the cost of an os.fstat (a CREATE and a
 *       QUERY_INFO take three). Failures raise OSError as os.fstat's.
 *
 *   split_ascii_path(name, depot), range_locked(fd, start, end, write): paths.c.
 *
 *   set_status_flags(fd, flags)
 *       fcntl(F_SETFL): what an open's O_NONBLOCK is cleared with once its type is checked
 *       (vfs.posix), without fcntl.fcntl's audit event and argument conversion (several
 *       times the system call, on every CREATE of an existing file).
 *
 * Every argument is checked; failures raise (ValueError, TypeError, OSError with errno);
 * nothing here keeps state between calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "dirent.h"

/* One entry as the VFS found it. Native byte order, no padding: "=IIQQqqqqIIQQQQ". */
struct record {
    uint32_t flags;
    uint32_t mode;
    uint64_t ino;
    uint64_t dev;
    int64_t size;
    int64_t atime_ns;
    int64_t mtime_ns;
    int64_t ctime_ns;
    uint32_t dos_attrs;     /* smbring's DOS record (vfs.posix._DOS: "<IQQQQ") */
    uint32_t reserved;
    uint64_t dos_create;
    uint64_t dos_change;
    uint64_t dos_change_mtime_ns;
    uint64_t dos_allocation;
};
_Static_assert(sizeof(struct record) == 96, "record layout");
#define RECORD_FORMAT "=IIQQqqqqIIQQQQ"

#define REC_PRESENT 0x1   /* the stat succeeded (else: gone since the names were read) */
#define REC_DOS 0x2       /* a valid DOS record was stored on the entry */
#define REC_SLOW 0x4      /* a value no fixed-size field holds (a time beyond 64-bit ns) */

#define DOS_SIZE 36       /* "<IQQQQ" */

/* encode_entries' status */
#define DONE 0            /* every record consumed */
#define FULL 1            /* the entry at `index` does not fit in `room` */
#define SLOW 2            /* the entry at `index` is the general code's */
#define SINGLE 3          /* one entry written, as RETURN_SINGLE_ENTRY asks */

#define MAX_NAMES (1 << 24)

#if defined(__x86_64__) || defined(__aarch64__) || defined(__riscv)
#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#endif

struct xattr_args_v0 {      /* struct xattr_args (Linux 6.13) */
    uint64_t value;
    uint32_t size;
    uint32_t flags;
};

/* The name as the kernel takes it (what os.fsencode gives), one path component: never
 * empty, ".", "..", nor holding a slash or a NUL (a caller's mistake must not reach outside
 * the directory). Returns a new reference to bytes, or NULL with ValueError/TypeError set. */
static PyObject *component(PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "names must be str");
        return NULL;
    }
    PyObject *b = PyUnicode_EncodeFSDefault(name);
    if (b == NULL)
        return NULL;
    const char *s = PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n == 0 || n > NAME_MAX || memchr(s, '/', n) || memchr(s, '\0', n) ||
        strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        Py_DECREF(b);
        PyErr_Format(PyExc_ValueError, "not a directory entry's name: %R", name);
        return NULL;
    }
    return b;
}

static int ns_of(const struct timespec *t, int64_t *out)
{
    int64_t ns;
    if (__builtin_mul_overflow((int64_t)t->tv_sec, (int64_t)1000000000, &ns) ||
        __builtin_add_overflow(ns, (int64_t)t->tv_nsec, &ns))
        return -1;
    *out = ns;
    return 0;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The entry's DOS xattr into buf (DOS_SIZE + 1 bytes); its length, or -1 (none, or unreadable:
 * a listing shows the entry without it, as smb.fs.get_dos_at does). *have_at: whether
 * getxattrat exists (cleared the first time the kernel says ENOSYS). */
static ssize_t read_dos(int dir_fd, const char *name, const char *xattr, unsigned char *buf,
                        int *have_at)
{
#ifdef SYS_getxattrat
    if (*have_at) {
        struct xattr_args_v0 a = {(uint64_t)(uintptr_t)buf, DOS_SIZE + 1, 0};
        long r = syscall(SYS_getxattrat, dir_fd, name, AT_SYMLINK_NOFOLLOW, xattr, &a, sizeof(a));
        if (r >= 0 || errno != ENOSYS)
            return r;
        *have_at = 0;
    }
#else
    (void)have_at;
#endif
    char path[64 + NAME_MAX];
    int n = snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dir_fd, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -1;
    return lgetxattr(path, xattr, buf, DOS_SIZE + 1);
}

static PyObject *stat_entries(PyObject *self, PyObject *args)
{
    (void)self;
    int dir_fd;
    PyObject *names;
    Py_ssize_t start, count;
    const char *xattr;
    if (!PyArg_ParseTuple(args, "iO!nns:stat_entries", &dir_fd, &PyList_Type, &names, &start,
                          &count, &xattr))
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(names);
    if (dir_fd < 0 || start < 0 || count < 0 || start > total || count > MAX_NAMES) {
        PyErr_SetString(PyExc_ValueError, "stat_entries: dir_fd, start or count out of range");
        return NULL;
    }
    if (count > total - start)
        count = total - start;
    PyObject *records = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(struct record));
    PyObject *symlinks = PyList_New(0);
    if (records == NULL || symlinks == NULL)
        goto fail;
    struct record *r = (struct record *)PyBytes_AS_STRING(records);
    memset(r, 0, count * sizeof(struct record));
    int have_at = 1;
    for (Py_ssize_t i = 0; i < count; i++, r++) {
        PyObject *b = component(PyList_GET_ITEM(names, start + i));
        if (b == NULL)
            goto fail;
        const char *name = PyBytes_AS_STRING(b);
        struct stat st;
        int gone;
        ssize_t dlen = -1;
        unsigned char dos[DOS_SIZE + 1];
        Py_BEGIN_ALLOW_THREADS
        gone = fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0;
        if (!gone)
            dlen = read_dos(dir_fd, name, xattr, dos, &have_at);
        Py_END_ALLOW_THREADS
        Py_DECREF(b);
        if (gone) {
            if (errno == EBADF || errno == ENOTDIR) {    /* not a directory fd: the caller's */
                PyErr_SetFromErrno(PyExc_OSError);
                goto fail;
            }
            continue;
        }
        r->flags = REC_PRESENT;
        r->mode = st.st_mode;
        r->ino = st.st_ino;
        r->dev = st.st_dev;
        r->size = st.st_size;
        if (ns_of(&st.st_atim, &r->atime_ns) || ns_of(&st.st_mtim, &r->mtime_ns) ||
            ns_of(&st.st_ctim, &r->ctime_ns))
            r->flags |= REC_SLOW;
        if (dlen == DOS_SIZE) {
            r->flags |= REC_DOS;
            r->dos_attrs = get32(dos);
            r->dos_create = get64(dos + 4);
            r->dos_change = get64(dos + 12);
            r->dos_change_mtime_ns = get64(dos + 20);
            r->dos_allocation = get64(dos + 28);
        }
        if (S_ISLNK(st.st_mode)) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(symlinks, index) < 0) {
                Py_XDECREF(index);
                goto fail;
            }
            Py_DECREF(index);
        }
    }
    return Py_BuildValue("(NN)", records, symlinks);
fail:
    Py_XDECREF(records);
    Py_XDECREF(symlinks);
    return NULL;
}

/* -- encoding (no system calls) ------------------------------------------------------------ */

#define EPOCH_NT 116444736000000000LL
#define ATTR_READONLY 0x1u
#define ATTR_HIDDEN 0x2u
#define ATTR_DIRECTORY 0x10u
#define ATTR_ARCHIVE 0x20u
#define ATTR_NORMAL 0x80u
/* smb.fileinfo.STORED_ATTRIBUTES | ATTR_SPARSE_FILE */
#define KEPT_ATTRIBUTES (0x1u | 0x2u | 0x4u | 0x20u | 0x100u | 0x1000u | 0x2000u | 0x200u)

/* NT time of a Unix time in ns (wire.nt_time: floor division); -1 if negative (the general
 * code decides what such a time gives). */
static int64_t nt_time(int64_t ns)
{
    int64_t q = ns / 100;
    if (ns % 100 < 0)
        q--;
    q += EPOCH_NT;
    return q < 0 ? -1 : q;
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* UTF-16LE length of the name in bytes; -1 for a lone surrogate (a name the strict codec
 * refuses: left to the general code). */
static Py_ssize_t utf16_size(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), size = 0;
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    if (kind == PyUnicode_1BYTE_KIND)
        return 2 * n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF)
            return -1;
        size += c > 0xFFFF ? 4 : 2;
    }
    return size;
}

static void utf16_put(PyObject *s, unsigned char *p)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c > 0xFFFF) {
            c -= 0x10000;
            put16(p, (uint16_t)(0xD800 | (c >> 10)));
            put16(p + 2, (uint16_t)(0xDC00 | (c & 0x3FF)));
            p += 4;
        } else {
            put16(p, (uint16_t)c);
            p += 2;
        }
    }
}

static uint32_t crc32_of(const unsigned char *s, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= s[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static int short_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'()-@^_`{}~", c) != NULL);
}

/* smb.fileinfo.short_name for an ASCII name, into out (at most 12 characters); its length. */
static size_t ascii_short_name(const unsigned char *s, size_t n, char out[13])
{
    size_t k = 0;
    while (k < n && s[k] == '.')
        k++;
    size_t blen = n, elen = 0;
    const unsigned char *ext = s + n;
    if (memchr(s + k, '.', n - k) != NULL) {
        const unsigned char *dot = s + n - 1;
        while (*dot != '.')
            dot--;
        blen = (size_t)(dot - s);
        ext = dot + 1;
        elen = n - blen - 1;
    }
    int valid = blen > 0 && blen <= 8 && elen <= 3;
    for (size_t i = 0; valid && i < blen; i++)
        valid = short_char(ascii_upper(s[i]));
    for (size_t i = 0; valid && i < elen; i++)
        valid = short_char(ascii_upper(ext[i]));
    size_t len = 0;
    if (valid) {
        for (size_t i = 0; i < n; i++)
            out[len++] = (char)ascii_upper(s[i]);
        return len;
    }
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uint32_t h = crc32_of(s, n);
    for (size_t i = 0; i < blen && len < 5; i++) {
        unsigned char c = ascii_upper(s[i]);
        if (short_char(c) && c != '~')
            out[len++] = (char)c;
    }
    if (len == 0)
        out[len++] = '_';
    out[len++] = '~';
    out[len++] = alphabet[h % 36];
    out[len++] = alphabet[(h / 36) % 36];
    size_t tail = 0;
    for (size_t i = 0; i < elen && tail < 3; i++) {
        unsigned char c = ascii_upper(ext[i]);
        if (short_char(c)) {
            if (tail == 0)
                out[len++] = '.';
            out[len++] = (char)c;
            tail++;
        }
    }
    return len;
}

/* The 8.3 name's UTF-16LE bytes into out (24 bytes, zero-filled), its length in bytes; -1 for
 * a short name longer than the field (left to the general code); -2 with an exception set. */
static int short_name_into(PyObject *name, PyObject *short_name, unsigned char out[24])
{
    memset(out, 0, 24);
    if (PyUnicode_IS_ASCII(name)) {
        char s[13];
        size_t n = ascii_short_name((const unsigned char *)PyUnicode_DATA(name),
                                    (size_t)PyUnicode_GET_LENGTH(name), s);
        for (size_t i = 0; i < n; i++)
            put16(out + 2 * i, (unsigned char)s[i]);
        return (int)(2 * n);
    }
    PyObject *sn = PyObject_CallOneArg(short_name, name);
    if (sn == NULL)
        return -2;
    if (!PyUnicode_Check(sn)) {
        Py_DECREF(sn);
        PyErr_SetString(PyExc_TypeError, "short_name must return str");
        return -2;
    }
    Py_ssize_t size = utf16_size(sn);
    if (size < 0 || size > 24) {
        Py_DECREF(sn);
        return -1;
    }
    utf16_put(sn, out);
    Py_DECREF(sn);
    return (int)size;
}

/* The write time shown for the entry (smb.write_times.shown((dev, ino))) in ns, into *ns;
 * 0: the kernel's, 1: *ns set, -1: an exception, -2: a value beyond 64 bits (general code). */
static int shown_write(PyObject *shown, const struct record *r, int64_t *ns)
{
    PyObject *key = Py_BuildValue("(KK)", (unsigned long long)r->dev, (unsigned long long)r->ino);
    if (key == NULL)
        return -1;
    PyObject *v = PyObject_CallOneArg(shown, key);
    Py_DECREF(key);
    if (v == NULL)
        return -1;
    if (v == Py_None) {
        Py_DECREF(v);
        return 0;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return -2;
    *ns = x;
    return 1;
}

static const int FIXED[] = {[1] = 64, [2] = 68, [3] = 94, [12] = 12, [37] = 104, [38] = 80};

static int known_class(int klass)
{
    return klass == 1 || klass == 2 || klass == 3 || klass == 12 || klass == 37 || klass == 38;
}

static uint32_t attributes_of(const struct record *r, int hidden)
{
    int is_dir = S_ISDIR(r->mode);
    int dos = (r->flags & REC_DOS) != 0;
    uint32_t a;
    if (dos && r->dos_attrs)
        a = r->dos_attrs & KEPT_ATTRIBUTES & ~ATTR_READONLY;
    else
        a = is_dir ? 0 : ATTR_ARCHIVE;
    if (is_dir)
        a |= ATTR_DIRECTORY;
    if (is_dir ? (dos && (r->dos_attrs & ATTR_READONLY)) : !(r->mode & 0222))
        a |= ATTR_READONLY;
    if (hidden)
        a |= ATTR_HIDDEN;
    return a ? a : ATTR_NORMAL;
}

static PyObject *result(Py_ssize_t index, Py_ssize_t last, int status)
{
    return Py_BuildValue("(nni)", index, last, status);
}

static PyObject *encode_entries(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer rec;
    PyObject *names, *out, *shown, *short_name;
    Py_ssize_t start, room, last;
    int klass, single, hide_dot;
    if (!PyArg_ParseTuple(args, "y*O!niO!nnppOO:encode_entries", &rec, &PyList_Type, &names,
                          &start, &klass, &PyByteArray_Type, &out, &room, &last, &single,
                          &hide_dot, &shown, &short_name))
        return NULL;
    PyObject *ret = NULL;
    Py_ssize_t count = rec.len / (Py_ssize_t)sizeof(struct record);
    if (rec.len % (Py_ssize_t)sizeof(struct record) != 0 || start < 0 ||
        start > PyList_GET_SIZE(names) || count > PyList_GET_SIZE(names) - start ||
        !known_class(klass) || room < 0 || room > INT32_MAX || last < -1 ||
        last >= PyByteArray_GET_SIZE(out) || PyByteArray_GET_SIZE(out) > room ||
        (last >= 0 && last + 4 > PyByteArray_GET_SIZE(out))) {
        PyErr_SetString(PyExc_ValueError, "encode_entries: arguments out of range");
        goto done;
    }
    if (!PyCallable_Check(shown) || (short_name != Py_None && !PyCallable_Check(short_name))) {
        PyErr_SetString(PyExc_TypeError, "encode_entries: shown must be callable, short_name callable or None");
        goto done;
    }
    const struct record *records = rec.buf;
    Py_ssize_t index = start;
    for (Py_ssize_t i = 0; i < count; i++, index++) {
        struct record r;
        memcpy(&r, records + i, sizeof(r));     /* the buffer need not be aligned */
        if (!(r.flags & REC_PRESENT))
            continue;       /* gone since the scan began: not listed */
        PyObject *name = PyList_GET_ITEM(names, index);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            goto done;
        }
        Py_ssize_t nlen = utf16_size(name);
        /* (".", ".." and an empty name are never a listing's batch: the general code's too) */
        if ((r.flags & REC_SLOW) || nlen <= 0 || nlen > 0xFFFF ||
            PyUnicode_CompareWithASCIIString(name, ".") == 0 ||
            PyUnicode_CompareWithASCIIString(name, "..") == 0) {
            ret = result(index, last, SLOW);
            goto done;
        }
        int64_t write_ns = r.mtime_ns;
        int64_t create = 0, access = 0, write = 0, change = 0;
        if (klass != 12) {
            int w = shown_write(shown, &r, &write_ns);
            if (w == -1)
                goto done;
            int dos = (r.flags & REC_DOS) != 0;
            create = dos && r.dos_create ? (int64_t)r.dos_create
                                         : nt_time(r.mtime_ns < r.ctime_ns ? r.mtime_ns : r.ctime_ns);
            access = nt_time(r.atime_ns);
            write = nt_time(write_ns);
            change = dos && r.dos_change && r.dos_change_mtime_ns == (uint64_t)r.mtime_ns
                         ? (int64_t)r.dos_change : nt_time(r.ctime_ns);
            /* dos_create/dos_change beyond 2^63 read as negative here: the general code's */
            if (w == -2 || create < 0 || access < 0 || write < 0 || change < 0) {
                ret = result(index, last, SLOW);
                goto done;
            }
        }
        unsigned char short_utf16[24];
        int short_len = 0;
        memset(short_utf16, 0, sizeof short_utf16);
        if ((klass == 3 || klass == 37) && short_name != Py_None) {     /* None: no 8.3 names */
            short_len = short_name_into(name, short_name, short_utf16);
            if (short_len == -2)
                goto done;
            if (short_len < 0) {
                ret = result(index, last, SLOW);
                goto done;
            }
        }
        Py_ssize_t size = PyByteArray_GET_SIZE(out);
        Py_ssize_t at = (size + 7) & ~(Py_ssize_t)7;
        Py_ssize_t fixed = FIXED[klass];
        if (at + fixed + nlen > room) {
            ret = result(index, last, FULL);
            goto done;
        }
        if (PyByteArray_Resize(out, at + fixed + nlen) < 0)
            goto done;
        unsigned char *buf = (unsigned char *)PyByteArray_AS_STRING(out);
        memset(buf + size, 0, at + fixed - size);
        if (last >= 0)
            put32(buf + last, (uint32_t)(at - last));
        last = at;
        unsigned char *e = buf + at;
        put32(e + 4, (uint32_t)index);
        if (klass == 12) {
            put32(e + 8, (uint32_t)nlen);
        } else {
            int is_dir = S_ISDIR(r.mode);
            uint64_t size_rounded = ((uint64_t)r.size + 4095) & ~(uint64_t)4095;
            uint64_t reserved = (r.flags & REC_DOS) ? r.dos_allocation : 0;
            put64(e + 8, (uint64_t)create);
            put64(e + 16, (uint64_t)access);
            put64(e + 24, (uint64_t)write);
            put64(e + 32, (uint64_t)change);
            put64(e + 40, is_dir ? 0 : (uint64_t)r.size);
            put64(e + 48, is_dir ? 0 : (size_rounded > reserved ? size_rounded : reserved));
            put32(e + 56, attributes_of(&r, hide_dot && PyUnicode_READ_CHAR(name, 0) == '.'));
            put32(e + 60, (uint32_t)nlen);
            if (klass == 3 || klass == 37) {
                e[68] = (unsigned char)short_len;
                memcpy(e + 70, short_utf16, 24);
            }
            if (klass == 37)
                put64(e + 96, r.ino);
            if (klass == 38)
                put64(e + 72, r.ino);
        }
        utf16_put(name, e + fixed);
        if (single) {
            ret = result(index + 1, last, SINGLE);
            goto done;
        }
    }
    ret = result(index, last, DONE);
done:
    PyBuffer_Release(&rec);
    return ret;
}

/* count_fitting(names, start, stop, klass, room, used) -> how many of names[start:stop] could
 * fit in `room` bytes after `used` (each entry at least its fixed part and two bytes per
 * character, on an 8-byte boundary): how many entries a batch stats at most. */
static PyObject *count_fitting(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *names;
    Py_ssize_t start, stop, room, used;
    int klass;
    if (!PyArg_ParseTuple(args, "O!nninn:count_fitting", &PyList_Type, &names, &start, &stop,
                          &klass, &room, &used))
        return NULL;
    if (start < 0 || stop < start || stop > PyList_GET_SIZE(names) || !known_class(klass) ||
        used < 0 || room < 0) {
        PyErr_SetString(PyExc_ValueError, "count_fitting: arguments out of range");
        return NULL;
    }
    Py_ssize_t i = start;
    for (; i < stop; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be str");
            return NULL;
        }
        used = ((used + 7) & ~(Py_ssize_t)7) + FIXED[klass] + 2 * PyUnicode_GET_LENGTH(name);
        if (used > room)
            break;
    }
    return PyLong_FromSsize_t(i - start);
}

/* read_names(dir_fd) -> the names in the directory, "." and ".." left out, in the order the
 * file system gives them: getdents64(2) straight on the descriptor, which os.listdir(fd)
 * wraps in a dup, fdopendir's own fstat and fcntls, and a rewind. It reads from the
 * descriptor's offset and leaves it at the end: for a descriptor opened for this one
 * listing (match_case's), closed after. Names are decoded as os.listdir decodes them. */
struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

#define NAMES_BUFFER 32768

static PyObject *read_names(PyObject *self, PyObject *args)
{
    (void)self;
    int fd;
    if (!PyArg_ParseTuple(args, "i:read_names", &fd))
        return NULL;
    char *buf = PyMem_Malloc(NAMES_BUFFER);
    if (buf == NULL)
        return PyErr_NoMemory();
    PyObject *names = PyList_New(0);
    if (names == NULL)
        goto failed;
    for (;;) {
        long n;
        Py_BEGIN_ALLOW_THREADS
        n = syscall(SYS_getdents64, fd, buf, NAMES_BUFFER);
        Py_END_ALLOW_THREADS
        if (n < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto failed;
        }
        if (n == 0)
            break;
        for (long at = 0; at < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + at);
            if (d->d_reclen == 0 || at + d->d_reclen > n) {
                PyErr_SetString(PyExc_OSError, "read_names: malformed directory entry");
                goto failed;
            }
            at += d->d_reclen;
            const char *name = d->d_name;
            if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
                continue;
            PyObject *s = PyUnicode_DecodeFSDefault(name);
            if (s == NULL)
                goto failed;
            int appended = PyList_Append(names, s);
            Py_DECREF(s);
            if (appended < 0)
                goto failed;
        }
    }
    PyMem_Free(buf);
    return names;
failed:
    PyMem_Free(buf);
    Py_XDECREF(names);
    return NULL;
}

/* A stat kept as C fields; each attribute is made when read (a CREATE reads a few of the
 * fields: building all of them, as os.stat_result's structseq does, cost most of a fstat). */
typedef struct {
    PyObject_HEAD
    unsigned long long mode, ino, dev, nlink, uid, gid, rdev;
    long long size, blocks, blksize, atime_ns, mtime_ns, ctime_ns;
    double atime, mtime, ctime;
} StatObject;

#define STAT_MEMBER(name, type) \
    {"st_" #name, type, offsetof(StatObject, name), READONLY, NULL}

static PyMemberDef stat_members[] = {
    STAT_MEMBER(mode, T_ULONGLONG), STAT_MEMBER(ino, T_ULONGLONG), STAT_MEMBER(dev, T_ULONGLONG),
    STAT_MEMBER(nlink, T_ULONGLONG), STAT_MEMBER(uid, T_ULONGLONG), STAT_MEMBER(gid, T_ULONGLONG),
    STAT_MEMBER(rdev, T_ULONGLONG), STAT_MEMBER(size, T_LONGLONG), STAT_MEMBER(blocks, T_LONGLONG),
    STAT_MEMBER(blksize, T_LONGLONG), STAT_MEMBER(atime_ns, T_LONGLONG),
    STAT_MEMBER(mtime_ns, T_LONGLONG), STAT_MEMBER(ctime_ns, T_LONGLONG),
    STAT_MEMBER(atime, T_DOUBLE), STAT_MEMBER(mtime, T_DOUBLE), STAT_MEMBER(ctime, T_DOUBLE),
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject StatType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "smbring._dirent.Stat",
    .tp_basicsize = sizeof(StatObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A file's stat: the attributes of os.stat_result the server reads, by the same names.",
    .tp_members = stat_members,
};

static PyObject *stat_object(const struct stat *st)
{
    StatObject *r = PyObject_New(StatObject, &StatType);
    if (r == NULL)
        return NULL;
    r->mode = st->st_mode;
    r->ino = st->st_ino;
    r->dev = st->st_dev;
    r->nlink = st->st_nlink;
    r->uid = st->st_uid;
    r->gid = st->st_gid;
    r->rdev = st->st_rdev;
    r->size = st->st_size;
    r->blocks = st->st_blocks;
    r->blksize = st->st_blksize;
    r->atime_ns = (long long)st->st_atim.tv_sec * 1000000000LL + st->st_atim.tv_nsec;
    r->mtime_ns = (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    r->ctime_ns = (long long)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
    /* (as os.stat_result's floats: seconds + nanoseconds * 1e-9) */
    r->atime = st->st_atim.tv_sec + st->st_atim.tv_nsec * 1e-9;
    r->mtime = st->st_mtim.tv_sec + st->st_mtim.tv_nsec * 1e-9;
    r->ctime = st->st_ctim.tv_sec + st->st_ctim.tv_nsec * 1e-9;
    return (PyObject *)r;
}

/* Whether a time's nanoseconds fit in 64 bits (years 1678 to 2262); else the caller
 * takes os.stat's answer, which has no such bound. */
static int times_fit(const struct stat *st)
{
    const long long most = 9223372035LL, least = -9223372035LL;
    return st->st_atim.tv_sec < most && st->st_atim.tv_sec > least &&
           st->st_mtim.tv_sec < most && st->st_mtim.tv_sec > least &&
           st->st_ctim.tv_sec < most && st->st_ctim.tv_sec > least;
}

/* -- an open's information: times, sizes, attributes (no system calls) ------------------ */

/* The DOS record's fields, read from a DosInfo (vfs.api) or None. */
struct dos_fields {
    int present;
    uint64_t attrs, create_time, change_time, change_mtime_ns, allocation;
};

/* An unsigned 64-bit int attribute of o into *out: 0; 1 where it is no int in [0, 2**64)
 * (the general code's); -1 with an exception. */
static int u64_attr(PyObject *o, const char *name, uint64_t *out)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL)
        return -1;
    if (!PyLong_Check(v)) {
        Py_DECREF(v);
        return 1;
    }
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();      /* (negative or past 64 bits) */
        return 1;
    }
    *out = x;
    return 0;
}

static int read_dos_fields(PyObject *dos, struct dos_fields *d)
{
    memset(d, 0, sizeof(*d));
    if (dos == Py_None)
        return 0;
    d->present = 1;
    int r;
    if ((r = u64_attr(dos, "attrs", &d->attrs)) != 0 ||
        (r = u64_attr(dos, "create_time", &d->create_time)) != 0 ||
        (r = u64_attr(dos, "change_time", &d->change_time)) != 0 ||
        (r = u64_attr(dos, "change_mtime_ns", &d->change_mtime_ns)) != 0 ||
        (r = u64_attr(dos, "allocation", &d->allocation)) != 0)
        return r;
    return 0;
}

/* network_open_info(file_st, file_dos, write_ns, hidden, st, dos, is_dir) -> bytes | None
 * What a CREATE response (and FILE_NETWORK_OPEN_INFORMATION) shows of an open, packed
 * "<QQQQQQI" (52 bytes): its file's CreationTime, LastAccessTime, LastWriteTime and
 * ChangeTime (`write_ns`, an int or None, shown in place of the kernel's write time), its own
 * AllocationSize and EndofFile (0 for a directory: `is_dir`), its file's FileAttributes
 * (`hidden`: the share's rules hide it). As smb.fileinfo's time_fields, alloc_size and
 * attributes compute them, from this module's Stat objects and a DosInfo or None; None
 * where a value is not theirs to take (another stat type, a time before 1601 or past 64
 * bits, a field no 64-bit number holds): the general code then computes it. */
static PyObject *network_open_info(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "network_open_info(file_st, file_dos, write_ns, hidden, st, dos, is_dir) takes 7 "
                        "arguments");
        return NULL;
    }
    if (Py_TYPE(args[0]) != &StatType || Py_TYPE(args[4]) != &StatType)
        Py_RETURN_NONE;
    const StatObject *fst = (const StatObject *)args[0], *st = (const StatObject *)args[4];
    int hidden = PyObject_IsTrue(args[3]), is_dir = PyObject_IsTrue(args[6]);
    if (hidden < 0 || is_dir < 0)
        return NULL;
    struct dos_fields fd, d;
    int r = read_dos_fields(args[1], &fd);
    if (r == 0) {
        if (args[5] == args[1])
            d = fd;         /* (a file's or directory's own: one record read) */
        else
            r = read_dos_fields(args[5], &d);
    }
    if (r < 0)
        return NULL;
    if (r > 0)
        Py_RETURN_NONE;
    int64_t written_ns = fst->mtime_ns;
    if (args[2] != Py_None) {
        int overflow = 0;
        long long w = PyLong_AsLongLongAndOverflow(args[2], &overflow);
        if (w == -1 && PyErr_Occurred())
            return NULL;
        if (overflow)
            Py_RETURN_NONE;
        written_ns = w;
    }
    /* CreationTime: as stored, else the older of the modification and change times (no
     * birth time here: fileinfo.creation_time) */
    int64_t birth = fd.present && fd.create_time ? (int64_t)fd.create_time :
        nt_time(fst->mtime_ns < fst->ctime_ns ? fst->mtime_ns : fst->ctime_ns);
    int64_t access = nt_time(fst->atime_ns), written = nt_time(written_ns);
    int64_t change = nt_time(fst->ctime_ns);
    /* a change time set by a client holds until the next write moves the file on */
    if (fd.present && fd.change_time && fd.change_mtime_ns == (uint64_t)fst->mtime_ns)
        change = (int64_t)fd.change_time;
    if (fd.present && (fd.create_time > INT64_MAX || fd.change_time > INT64_MAX))
        Py_RETURN_NONE;
    if (birth < 0 || access < 0 || written < 0 || change < 0 || st->size < 0)
        Py_RETURN_NONE;
    uint64_t alloc = 0;
    if (!S_ISDIR(st->mode)) {
        alloc = ((uint64_t)st->size + 4095) & ~(uint64_t)4095;
        if (d.present && d.allocation > alloc)
            alloc = d.allocation;
    }
    int file_is_dir = S_ISDIR(fst->mode);
    uint32_t a;
    if (fd.present && fd.attrs)
        a = (uint32_t)(fd.attrs & KEPT_ATTRIBUTES & ~ATTR_READONLY);
    else
        a = file_is_dir ? 0 : ATTR_ARCHIVE;
    if (file_is_dir)
        a |= ATTR_DIRECTORY;
    if (file_is_dir ? (fd.present && (fd.attrs & ATTR_READONLY)) : !(fst->mode & 0222))
        a |= ATTR_READONLY;
    if (hidden)
        a |= ATTR_HIDDEN;
    unsigned char out[52];
    put64(out, (uint64_t)birth);
    put64(out + 8, (uint64_t)access);
    put64(out + 16, (uint64_t)written);
    put64(out + 24, (uint64_t)change);
    put64(out + 32, alloc);
    put64(out + 40, is_dir ? 0 : (uint64_t)st->size);
    put32(out + 48, a ? a : ATTR_NORMAL);
    return PyBytes_FromStringAndSize((const char *)out, sizeof(out));
}

static PyObject *fstat_fd(PyObject *self, PyObject *args)
{
    (void)self;
    int fd, r, err = 0;
    struct stat st;
    if (!PyArg_ParseTuple(args, "i:fstat", &fd))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    r = fstat(fd, &st);
    err = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (!times_fit(&st))
        Py_RETURN_NONE;
    return stat_object(&st);
}

static PyObject *lstat_at(PyObject *self, PyObject *args)
{
    (void)self;
    int dir_fd, r, err = 0;
    PyObject *name_bytes = NULL;
    struct stat st;
    if (!PyArg_ParseTuple(args, "iO&:lstat_at", &dir_fd, PyUnicode_FSConverter, &name_bytes))
        return NULL;
    const char *name = PyBytes_AS_STRING(name_bytes);
    Py_BEGIN_ALLOW_THREADS
    r = fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW);
    err = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, PyTuple_GET_ITEM(args, 1));
        Py_DECREF(name_bytes);
        return NULL;
    }
    Py_DECREF(name_bytes);
    if (!times_fit(&st))
        Py_RETURN_NONE;
    return stat_object(&st);
}

static PyObject *set_status_flags(PyObject *self, PyObject *args)
{
    (void)self;
    int fd, flags, r, err = 0;
    if (!PyArg_ParseTuple(args, "ii:set_status_flags", &fd, &flags))
        return NULL;
    r = fcntl(fd, F_SETFL, flags);      /* (never waits: no GIL released for it) */
    err = errno;
    if (r < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* fgetxattr into `buf` (`size` bytes), errno kept across the GIL's return. */
static ssize_t fgetxattr_nogil(int fd, const char *name, void *buf, size_t size, int *err)
{
    ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = fgetxattr(fd, name, buf, size);
    *err = errno;
    Py_END_ALLOW_THREADS
    return n;
}

#define XATTR_SMALL 256     /* what os.getxattr tries first too */

static PyObject *get_xattr(PyObject *self, PyObject *args)
{
    (void)self;
    int fd, err = 0;
    PyObject *name_bytes = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "iO&:get_xattr", &fd, PyUnicode_FSConverter, &name_bytes))
        return NULL;
    const char *name = PyBytes_AS_STRING(name_bytes);
    char small[XATTR_SMALL];
    ssize_t n = fgetxattr_nogil(fd, name, small, sizeof small, &err);
    if (n >= 0) {
        out = PyBytes_FromStringAndSize(small, n);
        goto done;
    }
    /* larger than the first try: its size asked, then read; again if it grew meanwhile */
    while (err == ERANGE) {
        n = fgetxattr_nogil(fd, name, NULL, 0, &err);
        if (n < 0)
            break;
        out = PyBytes_FromStringAndSize(NULL, n);
        if (out == NULL)
            goto done;
        ssize_t got = fgetxattr_nogil(fd, name, PyBytes_AS_STRING(out), (size_t)n, &err);
        if (got >= 0) {
            if (got != n)
                _PyBytes_Resize(&out, got);
            goto done;
        }
        Py_CLEAR(out);
    }
    if (err == ENODATA) {
        out = Py_NewRef(Py_None);
    } else {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
done:
    Py_DECREF(name_bytes);
    return out;
}

static PyMethodDef methods[] = {
    {"stat_entries", stat_entries, METH_VARARGS,
     "stat_entries(dir_fd, names, start, count, xattr) -> (records, symlink indexes)"},
    {"encode_entries", encode_entries, METH_VARARGS,
     "encode_entries(records, names, start, klass, out, room, last, single, hide_dot, shown, "
     "short_name) -> (index, last, status)"},
    {"count_fitting", count_fitting, METH_VARARGS,
     "count_fitting(names, start, stop, klass, room, used) -> count"},
    {"read_names", read_names, METH_VARARGS,
     "read_names(dir_fd) -> the directory's names from the descriptor's offset on"},
    {"network_open_info", (PyCFunction)(void (*)(void))network_open_info, METH_FASTCALL,
     "network_open_info(file_st, file_dos, write_ns, hidden, st, dos, is_dir) -> bytes | None: an "
     "open's times, sizes and attributes as a CREATE response shows them"},
    {"fstat", fstat_fd, METH_VARARGS,
     "fstat(fd) -> Stat (None where a time is beyond 64-bit nanoseconds: ask os.fstat)"},
    {"lstat_at", lstat_at, METH_VARARGS,
     "lstat_at(dir_fd, name) -> Stat of the entry, not followed (None as fstat's)"},
    {"set_status_flags", set_status_flags, METH_VARARGS,
     "set_status_flags(fd, flags): fcntl(fd, F_SETFL, flags)"},
    {"get_xattr", get_xattr, METH_VARARGS,
     "get_xattr(fd, name) -> the open file's extended attribute, None where it has none"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smbring._dirent",
    "Directory listings in batches: the entries' stats (VFS) and their encoding (core); an "
    "open's information encoded (core).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__dirent(void)
{
    if (PyType_Ready(&StatType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, dirent_path_methods) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&StatType);
    if (PyModule_AddObject(m, "Stat", (PyObject *)&StatType) < 0) {
        Py_DECREF(&StatType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "RECORD", RECORD_FORMAT) < 0 ||
        PyModule_AddIntConstant(m, "RECORD_SIZE", sizeof(struct record)) < 0 ||
        PyModule_AddIntConstant(m, "PRESENT", REC_PRESENT) < 0 ||
        PyModule_AddIntConstant(m, "HAS_DOS", REC_DOS) < 0 ||
        PyModule_AddIntConstant(m, "NEEDS_GENERAL", REC_SLOW) < 0 ||
        PyModule_AddIntConstant(m, "DONE", DONE) < 0 ||
        PyModule_AddIntConstant(m, "FULL", FULL) < 0 ||
        PyModule_AddIntConstant(m, "SLOW", SLOW) < 0 ||
        PyModule_AddIntConstant(m, "SINGLE", SINGLE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
