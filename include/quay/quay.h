/* SPDX-License-Identifier: MIT */
/**
 * @file quay/quay.h
 * Umbrella header: includes every quay module.
 */
#ifndef QUAY_QUAY_H
#define QUAY_QUAY_H

#include <quay/version.h>
#include <quay/err.h>
#include <quay/alloc.h>
#include <quay/stats.h>
#include <quay/pool.h>
#include <quay/msg.h>
#include <quay/ring.h>
#include <quay/pq.h>
#include <quay/bus.h>
#include <quay/queue.h>
#include <quay/wal.h>

#endif /* QUAY_QUAY_H */
