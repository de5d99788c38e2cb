/* SPDX-License-Identifier: MIT */
/*
 * Every allocation libquay makes goes through these (src/alloc.c), with the
 * owning object's allocator (NULL: the C library). Frees are sized: pass the
 * size (and, for the _aligned pair, the alignment) the block was allocated
 * with; quayi_calloc(a, n, m) is freed with size n * m. scripts/check-alloc
 * (test headers/alloc-calls) rejects any other allocation call in src/.
 */
#ifndef QUAY_SRC_ALLOC_H
#define QUAY_SRC_ALLOC_H

#include <stddef.h>

#include <quay/alloc.h>

/* The alignment of quayi_alloc() and quayi_calloc() (malloc's). */
#define QUAYI_ALLOC_ALIGN _Alignof(max_align_t)

/* 0 if a is NULL (the C library) or usable; -EINVAL if a function is missing. */
int quayi_alloc_check(const struct quay_allocator *a);

/* n bytes (n may be 0: one byte is taken), or NULL. */
void *quayi_alloc(const struct quay_allocator *a, size_t n);
/* nmemb * size zeroed bytes, or NULL (also on overflow). */
void *quayi_calloc(const struct quay_allocator *a, size_t nmemb, size_t size);
/* n bytes aligned to align (a power of two), or NULL. */
void *quayi_alloc_aligned(const struct quay_allocator *a, size_t align, size_t n);
/* The same, zeroed. */
void *quayi_calloc_aligned(const struct quay_allocator *a, size_t align, size_t n);
/* Resize p (old bytes; NULL with old 0 allocates) to n bytes; NULL on
 * failure with p untouched. */
void *quayi_realloc(const struct quay_allocator *a, void *p, size_t old, size_t n);
/* A copy of s, freed with quayi_free(a, p, strlen(p) + 1); or NULL. */
char *quayi_strdup(const struct quay_allocator *a, const char *s);

/* Free p (NULL: nothing) of n bytes from quayi_alloc/calloc/realloc/strdup. */
void quayi_free(const struct quay_allocator *a, void *p, size_t n);
/* Free p (NULL: nothing) of n bytes from quayi_alloc_aligned(a, align, n). */
void quayi_free_aligned(const struct quay_allocator *a, void *p, size_t align, size_t n);

#endif /* QUAY_SRC_ALLOC_H */
