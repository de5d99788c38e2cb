/* SPDX-License-Identifier: MIT */
/*
 * Review demonstration (not registered in meson): a peer that writes the
 * shared ring's elem_size (or mask, stride) after another process
 * attached makes that process's pop write past the caller's buffer:
 * push/pop read mask, stride and elem_size from the mapping on every
 * call, so the attach-time validation does not protect them, contrary to
 * RING.md ("never outside its mapping"). Here the "peer" is a forked
 * child writing the field through its own mapping; the parent pops into
 * an 8-byte element surrounded by canaries. Exit 1 if the canary was
 * overwritten (the bug), 0 if the pop stayed within the caller's buffer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <quay/quay.h>

int
main(void)
{
	quay_ring *r, *peer;
	int fd, st;
	uint64_t v = 42;
	struct {
		uint64_t elem;
		unsigned char canary[64];
	} buf;

	if (quay_ring_create_shm(NULL, 64, 8, NULL, &r, &fd) != 0)
		return 2;
	if (quay_ring_push(r, &v) != 0)
		return 2;
	if (fork() == 0) {
		if (quay_ring_attach_shm(NULL, fd, 8, &peer) != 0)
			_exit(2);
		/* The peer (buggy or hostile): a larger element size. */
		((uint32_t *)(void *)peer)[5] = 64; /* elem_size: mask 8, memsize 8, stride 4, elem_size 4 */
		_exit(0);
	}
	wait(&st);
	memset(buf.canary, 0xAA, sizeof buf.canary);
	printf("pop: %d\n", quay_ring_pop(r, &buf.elem));
	for (size_t i = 0; i < sizeof buf.canary; i++)
		if (buf.canary[i] != 0xAA) {
			printf("pop wrote %zu+ bytes past the 8-byte element\n", i + 1);
			return 1;
		}
	printf("caller's buffer intact\n");
	return 0;
}
