/* SPDX-License-Identifier: MIT */
/*
 * Test driver of trading_layer --nats: starts a nats-server of its own on
 * 127.0.0.1 on a free port (tests/nats/nats_server.h), runs
 *   trading_layer --nats nats://127.0.0.1:<port> [extra args]
 * and exits with its status (77, meson's "skipped", passes through).
 *
 *   trading_layer_nats_test PATH/TO/trading_layer [--break=...]
 */
#include "../../tests/nats/nats_server.h"

int
main(int argc, char **argv)
{
	struct test_server srv = { 0 };
	char *args[8];
	int st = 0, n = 0;
	pid_t pid;

	if (argc < 2 || argc > 5) {
		fprintf(stderr, "usage: %s trading_layer [args]\n", argv[0]);
		return 2;
	}
	ts_init(&srv);
	args[n++] = argv[1];
	args[n++] = "--nats";
	args[n++] = srv.url;
	for (int i = 2; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	pid = fork();
	if (pid == 0) {
		execv(argv[1], args);
		perror("exec trading_layer");
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		st = 2 << 8;
	ts_fini(&srv);
	if (WIFSIGNALED(st)) {
		fprintf(stderr, "trading_layer died of signal %d\n", WTERMSIG(st));
		return 1;
	}
	return WEXITSTATUS(st);
}
