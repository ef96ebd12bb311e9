/*
 * Completion dispatch: CQEs to their requests, batch items and C handlers, and the drain
 * that reaps everything before a ring closes.
 */
#include "dispatch.h"
#include "request.h"

static int dispatch_batch_item(BatchItem *item, int32_t res, int silent, int *callbacks)
{
    BatchObject *b = item->batch;
    item->res = res;
    if (--b->remaining > 0)
        return 0;
    RequestObject *req = &b->base;
    if (req->callback && !silent)
        (*callbacks)++;
    return request_complete(req, res, 0, silent);
}

/* Dispatches ready CQEs. Each CQE is consumed (head advanced) before its handler runs, so
 * a handler may submit or even wait again. Python callbacks are limited to max_callbacks
 * (-1: all). Returns callbacks run, or -1 with an exception (remaining CQEs stay queued). */
static int dispatch(RingObject *r, int max_callbacks)
{
    int callbacks = 0;
    while ((max_callbacks < 0 || callbacks < max_callbacks) && r->fd >= 0) {
        unsigned head = *r->cq_head;
        if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
            break;
        struct io_uring_cqe cqe = r->cqes[head & *r->cq_mask];
        __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
        uintptr_t tag = cqe.user_data & SR_TAG_MASK;
        void *target = (void *)(uintptr_t)(cqe.user_data & ~(uint64_t)SR_TAG_MASK);
        if (!target)
            continue;
        int rc;
        if (tag == SR_TAG_CAPI) {
            sr_completion *c = target;
            rc = c->handler(c, cqe.res, cqe.flags);
        } else if (tag == SR_TAG_BATCH_ITEM) {
            rc = dispatch_batch_item(target, cqe.res, r->silent, &callbacks);
        } else {
            RequestObject *req = target;
            if (req->callback && !r->silent)
                callbacks++;
            rc = request_complete(req, cqe.res, cqe.flags, r->silent);
        }
        if (rc < 0)
            return -1;
        if (r->fd < 0)
            break;  /* a callback closed the ring: its queues are gone */
    }
    return callbacks;
}

int ring_wait_and_dispatch(RingObject *r, unsigned min_complete, int64_t timeout_ns,
                           int max_callbacks)
{
    if (ring_check_usable(r) < 0)
        return -1;
    if (ring_wait_cqes(r, min_complete, timeout_ns) < 0)
        return -1;
    return dispatch(r, max_callbacks);
}

/* ---- closing ---------------------------------------------------------------------------- */

static void cancel_everything(RingObject *r)
{
    struct io_uring_sqe *sqe = ring_next_sqe(r);
    if (!sqe) {
        PyErr_Clear();
        return;
    }
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL;
    sqe->user_data = 0;
}

/* Cancels what is in flight and reaps it, so no buffer is released while the kernel may
 * still write to it. Requests that outlive the grace period are leaked on purpose: their
 * memory stays valid, which a use-after-free would not. */
int ring_drain(RingObject *r, int silent)
{
    if (r->ninflight == 0)
        return 0;
    int was_silent = r->silent;
    r->silent = silent;
    cancel_everything(r);
    r->closing = 1;  /* callbacks run with -ECANCELED and may not start anything new */
    PyObject *et = NULL, *ev = NULL, *tb = NULL;
    int64_t deadline = sr_now_ns() + 5 * 1000000000LL;
    while (r->ninflight > 0) {
        int64_t left = deadline - sr_now_ns();
        if (left <= 0)
            break;
        if (ring_wait_cqes(r, 1, left < 100000000 ? left : 100000000) < 0 || dispatch(r, -1) < 0) {
            /* keep reaping: the first error is reported once everything is released */
            if (!et && !silent)
                PyErr_Fetch(&et, &ev, &tb);
            else
                PyErr_Clear();
        }
    }
    r->closing = 0;
    r->silent = was_silent;
    if (et) {
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return 0;
}
