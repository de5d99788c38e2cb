/* SPDX-License-Identifier: MIT */
#ifndef QUAY_BENCH_NATS_SHIM_H
#define QUAY_BENCH_NATS_SHIM_H
#ifdef __cplusplus
extern "C" {
#endif
/* Start a nats-server (JetStream on, temporary store, free port on
 * 127.0.0.1); returns its URL. */
const char *qb_nats_server_start(void);
void qb_nats_server_stop(void);
#ifdef __cplusplus
}
#endif
#endif
