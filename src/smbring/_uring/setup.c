/*
 * Setting a ring up and tearing it down: io_uring_setup with the flags the kernel accepts,
 * the mappings, the op probe, the registered ring fd; and the checks every entry point makes
 * (open, same thread, not inherited across fork()).
 */
#include "ring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

unsigned long sr_fork_generation = 0;

static void fork_child(void)
{
    sr_fork_generation++;
}

void ring_watch_forks(void)
{
    static int watching;
    if (!watching) {
        pthread_atfork(NULL, NULL, fork_child);
        watching = 1;
    }
}

int ring_register(RingObject *r, unsigned opcode, void *arg, unsigned nr)
{
    return sys_io_uring_register(r->fd, opcode, arg, nr);
}

static void register_ring_fd(RingObject *r)
{
    struct io_uring_rsrc_update upd;
    memset(&upd, 0, sizeof(upd));
    upd.offset = -1U;           /* any free slot */
    upd.data = (uint64_t)r->fd;
    r->enter_fd = r->fd;
    r->enter_flags = 0;
    if (ring_register(r, IORING_REGISTER_RING_FDS, &upd, 1) == 1) {
        r->enter_fd = (int)upd.offset;
        r->enter_flags = IORING_ENTER_REGISTERED_RING;
    }
}

/* Setup flags we ask for, dropped newest-first when the kernel refuses them. Never SQPOLL by
 * default: its polling thread fights the application for the CPU on small machines. */
static const unsigned wanted_flags[] = {
    SR_SETUP_NO_SQARRAY, IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER, IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_COOP_TASKRUN, IORING_SETUP_SUBMIT_ALL, IORING_SETUP_CQSIZE,
};

static void unavailable(int err)
{
    const char *why;
    switch (err) {
    case ENOSYS: why = "io_uring is not supported by this kernel (ENOSYS)"; break;
    case EPERM: why = "io_uring is disabled for this process (EPERM): see the sysctl "
                      "kernel.io_uring_disabled, seccomp or a container policy"; break;
    case ENOMEM: why = "io_uring ring could not be allocated (ENOMEM): locked-memory limit "
                       "(ulimit -l) too low?"; break;
    default: why = strerror(err); break;
    }
    PyObject *args = Py_BuildValue("(is)", err, why);
    if (args) {
        PyErr_SetObject(UringUnavailable, args);
        Py_DECREF(args);
    }
}

static int map_rings(RingObject *r, struct io_uring_params *p)
{
    /* without the SQ index array (6.6+) SQE i is simply slot i: nothing to map or write */
    int no_array = p->flags & SR_SETUP_NO_SQARRAY;
    unsigned last = p->sq_off.head;
    unsigned fields[] = {p->sq_off.tail, p->sq_off.ring_mask, p->sq_off.ring_entries,
                         p->sq_off.flags, p->sq_off.dropped};
    for (unsigned i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        last = fields[i] > last ? fields[i] : last;
    r->sq_map_size = no_array ? last + sizeof(unsigned)
                              : p->sq_off.array + p->sq_entries * sizeof(unsigned);
    r->cq_map_size = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
    int single = p->features & IORING_FEAT_SINGLE_MMAP;
    if (single) {
        if (r->cq_map_size > r->sq_map_size)
            r->sq_map_size = r->cq_map_size;
        r->cq_map_size = r->sq_map_size;
    }
    r->sq_map = mmap(NULL, r->sq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                     r->fd, IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) {
        r->sq_map = NULL;
        return -1;
    }
    if (single) {
        r->cq_map = r->sq_map;
    } else {
        r->cq_map = mmap(NULL, r->cq_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         r->fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) {
            r->cq_map = NULL;
            return -1;
        }
    }
    r->sqe_map_size = p->sq_entries * sizeof(struct io_uring_sqe);
    r->sqe_map = mmap(NULL, r->sqe_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      r->fd, IORING_OFF_SQES);
    if (r->sqe_map == MAP_FAILED) {
        r->sqe_map = NULL;
        return -1;
    }
    char *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p->sq_off.head);
    r->sq_tail = (unsigned *)(sq + p->sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p->sq_off.ring_mask);
    r->sq_entries = (unsigned *)(sq + p->sq_off.ring_entries);
    r->sq_flags = (unsigned *)(sq + p->sq_off.flags);
    if (!no_array) {
        unsigned *array = (unsigned *)(sq + p->sq_off.array);
        for (unsigned i = 0; i < p->sq_entries; i++)
            array[i] = i;  /* identity: SQE i sits in slot i, so the array is written once */
    }
    r->sqes = r->sqe_map;
    r->cq_head = (unsigned *)(cq + p->cq_off.head);
    r->cq_tail = (unsigned *)(cq + p->cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p->cq_off.ring_mask);
    r->cq_entries = (unsigned *)(cq + p->cq_off.ring_entries);
    r->cq_overflow = (unsigned *)(cq + p->cq_off.overflow);
    r->cq_flags = (unsigned *)(cq + p->cq_off.flags);
    r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
    r->sq_local_tail = *r->sq_tail;
    return 0;
}

static void probe_ops(RingObject *r)
{
    size_t size = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, size);
    if (!probe)
        return;
    if (ring_register(r, IORING_REGISTER_PROBE, probe, 256) == 0) {
        for (int i = 0; i < probe->ops_len && i < SR_OP_COUNT; i++)
            r->probe[i] = (probe->ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
        r->have_probe = 1;
    }
    free(probe);
}

static void unmap_rings(RingObject *r)
{
    if (r->sqe_map)
        munmap(r->sqe_map, r->sqe_map_size);
    if (r->cq_map && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_map_size);
    if (r->sq_map)
        munmap(r->sq_map, r->sq_map_size);
    r->sqe_map = r->cq_map = r->sq_map = NULL;
}

int ring_setup(RingObject *r, unsigned entries, unsigned cq_entries, const unsigned *flags_given,
               int sqpoll)
{
    unsigned flags = 0, nflags = sizeof(wanted_flags) / sizeof(wanted_flags[0]);
    if (flags_given) {
        flags = *flags_given;
    } else {
        for (unsigned i = 0; i < nflags; i++)
            flags |= wanted_flags[i];
    }
    if (sqpoll)
        flags = (flags | IORING_SETUP_SQPOLL) & ~(IORING_SETUP_DEFER_TASKRUN);

    struct io_uring_params p;
    int fd;
    unsigned drop = 0;
    for (;;) {
        memset(&p, 0, sizeof(p));
        p.flags = flags;
        p.cq_entries = cq_entries;
        fd = sys_io_uring_setup(entries, &p);
        if (fd >= 0 || errno != EINVAL || flags_given || drop >= nflags)
            break;
        flags &= ~wanted_flags[drop++];  /* the kernel is older than this flag: do without */
    }
    if (fd < 0) {
        if (errno == EINVAL)
            PyErr_SetString(PyExc_ValueError, "the kernel refused these setup flags (EINVAL)");
        else
            unavailable(errno);
        return -1;
    }
    r->fd = fd;
    r->setup_flags = p.flags;
    r->features = p.features;
    if (map_rings(r, &p) < 0) {
        int err = errno;
        unmap_rings(r);
        close(fd);
        r->fd = -1;
        unavailable(err);
        return -1;
    }
    r->fork_generation = sr_fork_generation;
    r->owner = pthread_self();
    register_ring_fd(r);
    probe_ops(r);
    return 0;
}

/* The registration lives in the owner task's io_uring context and holds the ring file open:
 * it must go before close(), from that task. (A ring dropped by another thread keeps its
 * memory until the owner thread exits; rings belong to one thread anyway.) */
static void unregister_ring_fd(RingObject *r)
{
    if (!r->enter_flags)
        return;
    if (ring_owned_here(r)) {
        struct io_uring_rsrc_update upd;
        memset(&upd, 0, sizeof(upd));
        upd.offset = (unsigned)r->enter_fd;
        ring_register(r, IORING_UNREGISTER_RING_FDS, &upd, 1);
    }
    r->enter_fd = r->fd;
    r->enter_flags = 0;
}

void ring_destroy(RingObject *r)
{
    unregister_ring_fd(r);
    ring_free_queued(r);
    unmap_rings(r);
    if (r->eventfd >= 0)
        close(r->eventfd);
    r->eventfd = -1;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->closed = 1;
}

/* ---- guards ----------------------------------------------------------------------------- */

/* The refusals behind ring_check_usable, kept out of line: the check itself runs per op. */
int ring_refuse(RingObject *r)
{
    if (r->fd < 0)
        PyErr_SetString(PyExc_ValueError, r->closed ? "I/O on a closed Ring" : "Ring not initialised");
    else if (r->closing)
        PyErr_SetString(PyExc_ValueError, "the Ring is closing: no new requests");
    else if (r->fork_generation != sr_fork_generation)
        PyErr_SetString(PyExc_RuntimeError,
                        "this Ring was created before fork(); a forked child must create its own");
    else
        PyErr_SetString(PyExc_RuntimeError,
                        "a Ring may only be used from the thread that created it");
    return -1;
}

int ring_op_supported(RingObject *r, int opcode)
{
    if (opcode < 0 || opcode >= SR_OP_COUNT)
        return 0;
    return r->have_probe ? r->probe[opcode] : opcode <= IORING_OP_LAST;
}
