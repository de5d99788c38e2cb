/* SPDX-License-Identifier: MIT */
/*
 * The allocator hooks (include/quay/alloc.h). The only file in src/ that
 * calls the C library's allocator (scripts/check-alloc).
 *
 * A zero-byte request takes one byte, so that every successful allocation
 * is a real block with a size the free can be given back. The default
 * rounds aligned requests up to a multiple of the alignment, as
 * aligned_alloc wants; a custom allocator sees the size asked for.
 */
#include "alloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int
quayi_alloc_check(const struct quay_allocator *a)
{
	if (a != NULL && (a->alloc == NULL || a->free == NULL))
		return -EINVAL;
	return 0;
}

void *
quayi_alloc_aligned(const struct quay_allocator *a, size_t align, size_t n)
{
	if (n == 0)
		n = 1;
	if (align < QUAYI_ALLOC_ALIGN)
		align = QUAYI_ALLOC_ALIGN;
	if (a != NULL)
		return a->alloc(a->ctx, n, align);
	if (align == QUAYI_ALLOC_ALIGN)
		return malloc(n);
	if (n > SIZE_MAX - align)
		return NULL;
	return aligned_alloc(align, (n + align - 1) & ~(align - 1));
}

void *
quayi_alloc(const struct quay_allocator *a, size_t n)
{
	return quayi_alloc_aligned(a, QUAYI_ALLOC_ALIGN, n);
}

void *
quayi_calloc_aligned(const struct quay_allocator *a, size_t align, size_t n)
{
	void *p = quayi_alloc_aligned(a, align, n);

	if (p != NULL)
		memset(p, 0, n);
	return p;
}

void *
quayi_calloc(const struct quay_allocator *a, size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > SIZE_MAX / size)
		return NULL;
	if (a == NULL)
		return calloc(nmemb != 0 ? nmemb : 1, size != 0 ? size : 1);
	return quayi_calloc_aligned(a, QUAYI_ALLOC_ALIGN, nmemb * size);
}

void
quayi_free_aligned(const struct quay_allocator *a, void *p, size_t align, size_t n)
{
	if (p == NULL)
		return;
	if (n == 0)
		n = 1;
	if (align < QUAYI_ALLOC_ALIGN)
		align = QUAYI_ALLOC_ALIGN;
	if (a != NULL)
		a->free(a->ctx, p, n, align);
	else
		free(p);
}

void
quayi_free(const struct quay_allocator *a, void *p, size_t n)
{
	quayi_free_aligned(a, p, QUAYI_ALLOC_ALIGN, n);
}

void *
quayi_realloc(const struct quay_allocator *a, void *p, size_t old, size_t n)
{
	void *np;

	if (p == NULL)
		return quayi_alloc(a, n);
	if (n == 0)
		n = 1;
	if (old == 0)
		old = 1;
	if (a == NULL)
		return realloc(p, n);
	if (a->realloc != NULL)
		return a->realloc(a->ctx, p, old, n, QUAYI_ALLOC_ALIGN);
	if ((np = a->alloc(a->ctx, n, QUAYI_ALLOC_ALIGN)) == NULL)
		return NULL;
	memcpy(np, p, old < n ? old : n);
	a->free(a->ctx, p, old, QUAYI_ALLOC_ALIGN);
	return np;
}

char *
quayi_strdup(const struct quay_allocator *a, const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = quayi_alloc(a, n);

	if (p != NULL)
		memcpy(p, s, n);
	return p;
}
