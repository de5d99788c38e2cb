/* SPDX-License-Identifier: MIT */
/* The dedup callbacks a durable queue's log gets (src/queue_dedup_log.c).
 * Never installed. */
#ifndef QUAY_QUEUE_DEDUP_LOG_H
#define QUAY_QUEUE_DEDUP_LOG_H

#include <stdint.h>

#include <quay/queue.h>

struct quayi_qlog_host;

/* Fill h's dedup fields (window: its dedup_window_ns; <= 0 leaves
 * them empty). */
void quayi_dedup_log_host(int64_t window, struct quayi_qlog_host *h);

#endif /* QUAY_QUEUE_DEDUP_LOG_H */
