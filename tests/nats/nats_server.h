/* SPDX-License-Identifier: MIT */
/* Start and stop a real nats-server for the NATS tests: JetStream on, a
 * temporary store directory, a free port on 127.0.0.1. */
#ifndef QUAY_TEST_NATS_SERVER_H
#define QUAY_TEST_NATS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct test_server {
	pid_t pid;
	int port;
	int no_js;        /* set before ts_init: a server without JetStream */
	const char *conf; /* set before ts_start: a config file (-c) */
	char dir[64];
	char url[64];
};

static int
ts_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
		perror("free port");
		exit(2);
	}
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int
ts_accepts(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* (Re)start the server on s->port and s->dir; waits until it accepts. */
static void
ts_start(struct test_server *s)
{
	char port[16];
	const char *bin = getenv("QUAY_NATS_SERVER");

	if (bin == NULL)
		bin = "nats-server";
	snprintf(port, sizeof(port), "%d", s->port);
	s->pid = fork();
	if (s->pid == 0) {
		int fd = open("/dev/null", 1);
		if (fd >= 0 && getenv("QUAY_NATS_SERVER_LOG") == NULL) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (s->conf != NULL)
			execlp(bin, bin, "-c", s->conf, "-a", "127.0.0.1", "-p", port, (char *)NULL);
		else if (s->no_js)
			execlp(bin, bin, "-a", "127.0.0.1", "-p", port, (char *)NULL);
		else
			execlp(bin, bin, "-a", "127.0.0.1", "-p", port, "-js", "-sd", s->dir, (char *)NULL);
		perror("exec nats-server");
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		int st;
		if (ts_accepts(s->port))
			return;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			fprintf(stderr, "nats-server exited (status %d)\n", st);
			exit(2);
		}
		usleep(10000);
	}
	fprintf(stderr, "nats-server did not start on port %d\n", s->port);
	exit(2);
}

static inline void
ts_init(struct test_server *s)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/quay-nats-XXXXXX");
	if (mkdtemp(s->dir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	s->port = ts_free_port();
	snprintf(s->url, sizeof(s->url), "nats://127.0.0.1:%d", s->port);
	ts_start(s);
}

/* Stop with sig (SIGTERM: clean; SIGKILL: a crash) and reap. */
static void
ts_stop(struct test_server *s, int sig)
{
	if (s->pid > 0) {
		kill(s->pid, sig);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

static inline void
ts_fini(struct test_server *s)
{
	char cmd[128];

	ts_stop(s, SIGTERM);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", s->dir);
}

#endif
