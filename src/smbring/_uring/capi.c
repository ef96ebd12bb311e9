/*
 * The C API another extension (smbring._events) uses to share a ring: what uring_api.h
 * declares, over the same queue and dispatch the Ring type uses. Exported as the capsule
 * smbring._uring._C_API.
 */
#include "capi.h"
#include "dispatch.h"
#include "ring_object.h"

static struct sr_ring *capi_from_object(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &RingType)) {
        PyErr_SetString(PyExc_TypeError, "expected a smbring.uring.Ring");
        return NULL;
    }
    return (struct sr_ring *)obj;
}

static struct io_uring_sqe *capi_get_sqe(struct sr_ring *ring, sr_completion *c)
{
    RingObject *r = (RingObject *)ring;
    if (ring_check_usable(r) < 0)
        return NULL;
    struct io_uring_sqe *sqe = ring_next_sqe(r);
    if (sqe)
        sqe->user_data = (uint64_t)(uintptr_t)c | SR_TAG_CAPI;
    return sqe;
}

static int capi_submit(struct sr_ring *ring)
{
    RingObject *r = (RingObject *)ring;
    if (ring_check_usable(r) < 0)
        return -1;
    return ring_submit(r);
}

static int capi_wait(struct sr_ring *ring, unsigned min_complete, int64_t timeout_ns, int max_cb)
{
    return ring_wait_and_dispatch((RingObject *)ring, min_complete, timeout_ns, max_cb);
}

static int capi_op_supported(struct sr_ring *ring, int opcode)
{
    return ring_op_supported((RingObject *)ring, opcode);
}

static Py_ssize_t capi_inflight(struct sr_ring *ring)
{
    return ((RingObject *)ring)->ninflight;
}

static unsigned capi_cq_ready(struct sr_ring *ring)
{
    RingObject *r = (RingObject *)ring;
    return r->cq_tail ? cq_ready(r) : 0;
}

const sr_ring_api sr_capi = {
    .version = SR_RING_API_VERSION,
    .from_object = capi_from_object,
    .get_sqe = capi_get_sqe,
    .submit = capi_submit,
    .wait_and_dispatch = capi_wait,
    .op_supported = capi_op_supported,
    .cq_ready = capi_cq_ready,
    .inflight = capi_inflight,
};
