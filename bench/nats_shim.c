/* SPDX-License-Identifier: MIT */
/* C shim for bench_nats.cc: start and stop the nats-server the benchmark
 * runs against (the tests' helper, tests/nats/nats_server.h). */
#include "nats_server.h"
#include "nats_shim.h"

static struct test_server srv;

const char *
qb_nats_server_start(void)
{
	ts_init(&srv);
	return srv.url;
}

void
qb_nats_server_stop(void)
{
	ts_fini(&srv);
}
