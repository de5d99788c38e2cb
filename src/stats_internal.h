/* SPDX-License-Identifier: MIT */
/* Private declarations shared by the stats registry (src/stats.c) and its
 * exporters (src/stats_export.c). Never installed. */
#ifndef QUAY_STATS_INTERNAL_H
#define QUAY_STATS_INTERNAL_H

#include <stddef.h>

#include <quay/stats.h>

/* A snapshot (quay_stats_snapshot): one allocation holding this header,
 * the n metrics, their histogram data, labels and strings. */
struct quay_stats_snap {
	size_t n;
	struct quay_stats_metric *m;
	const struct quay_allocator *alloc; /* the registry's */
	size_t bytes;                       /* of the whole block */
};

#endif /* QUAY_STATS_INTERNAL_H */
