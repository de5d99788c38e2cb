/* SPDX-License-Identifier: MIT */
/*
 * Helpers of the shared memory tests (rings and priority queues in shared
 * memory, fork()ed children): unique names, a child's state, its status.
 * Include after quay_test.h.
 */
#ifndef QUAY_SHM_TEST_H
#define QUAY_SHM_TEST_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char shm_test_name[64];

/* "/quay-test-PID-what": a name no other test run uses (one at a time). */
static inline const char *
tname(const char *what)
{
	snprintf(shm_test_name, sizeof(shm_test_name), "/quay-test-%d-%s", (int)getpid(), what);
	return shm_test_name;
}

/* Whether process pid is blocked in futex(2) (its /proc/PID/syscall). */
static inline bool
proc_in_futex(pid_t pid)
{
	char path[64];
	long nr = -1;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	fp = fopen(path, "r");
	if (fp == NULL)
		return false;
	if (fscanf(fp, "%ld", &nr) != 1)
		nr = -1;
	fclose(fp);
	return nr == SYS_futex;
}

/* Wait (up to 2 s) until pid sleeps in futex(2). */
static inline void
wait_in_futex(pid_t pid)
{
	for (int i = 0; i < 2000 && !proc_in_futex(pid); i++)
		usleep(1000);
}

/* Exit status of a child (128 + signal if killed), failing the test if it
 * hangs for 10 s. */
static inline int
child_status(pid_t pid)
{
	int st = 0;

	for (int i = 0; i < 10000; i++) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(1000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	fail_msg("child %d hung", (int)pid);
	return -1;
}

/* FNV-1a 64 of n bytes, continuing from x (start: UINT64_C(0xcbf29ce484222325)):
 * the check of the shared memory file headers. */
static inline uint64_t
shm_fnv(uint64_t x, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x = (x ^ p[i]) * UINT64_C(0x100000001b3);
	return x;
}

#endif /* QUAY_SHM_TEST_H */
