/*
 * The ring API of uring_api.h, for other extensions; module.c puts it in a capsule.
 */
#ifndef SMBRING_CAPI_H
#define SMBRING_CAPI_H

#include "base.h"
#include "uring_api.h"

extern const sr_ring_api sr_capi;

#endif
