/*
 * Completions: each CQE goes to what its user_data names, a request (its callback runs), an
 * item of a batch, or an sr_completion of another extension (its C handler runs).
 */
#ifndef SMBRING_DISPATCH_H
#define SMBRING_DISPATCH_H

#include "ring.h"

/* Submits, waits for min_complete CQEs for at most timeout_ns (-1: no limit), then dispatches
 * what is ready, Python callbacks up to max_callbacks (-1: all). Returns the callbacks run, or
 * -1 with the exception of the first that raised (the CQEs after it stay queued). */
int ring_wait_and_dispatch(RingObject *r, unsigned min_complete, int64_t timeout_ns,
                           int max_callbacks);

/* At close: cancels everything in flight and reaps it, for at most 5 s; silent runs no
 * Python callbacks (dealloc). -1 with the first exception a callback raised. */
int ring_drain(RingObject *r, int silent);

#endif
