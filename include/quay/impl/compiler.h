/* SPDX-License-Identifier: MIT */
/**
 * @file quay/impl/compiler.h
 * Compiler helpers shared by quay's inline headers. Internal: the names
 * here may change between releases; do not use them in your code.
 */
#ifndef QUAY_IMPL_COMPILER_H
#define QUAY_IMPL_COMPILER_H

/* Shared by every public module header (err.h defines QUAY_ERR_H and is
 * included by all of them first). */
#if !defined(QUAY_ERR_H)
#error "include <quay/quay.h> or a module header, not quay/impl/compiler.h"
#endif

/* The size quay aligns shared hot fields to, so that fields written by
 * different threads never share a cache line. 64 bytes on x86-64 and most
 * arm64 parts; adjacent-line prefetch makes 128 better on some Intel parts,
 * but we keep rings compact. Part of the ABI of the transparent structs. */
#define QUAY_CACHELINE 64

#define QUAYI_ALIGNED(n) __attribute__((aligned(n)))
#define QUAYI_LIKELY(x) __builtin_expect(!!(x), 1)
#define QUAYI_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define QUAYI_ALWAYS_INLINE inline __attribute__((always_inline))

/* QUAY_INLINE is how every inline function of the public API is declared.
 * src/inline_export.c defines it as an exported external definition first,
 * so that libquay also carries callable copies of the inline API for
 * callers that cannot use C headers (FFI, dlsym). */
#ifndef QUAY_INLINE
/* always_inline: the public wrappers carry the single- and multi-side
 * paths of every mode, and at -O2 g++ 12 kept quay_ring_push/pop out of
 * line (a push+pop pair cost 10.8 ns instead of 4.8 ns in a one-thread
 * loop). Inlined, the mode test folds away for a ring whose flags the
 * compiler can see and costs one predictable branch otherwise. */
#define QUAY_INLINE static inline __attribute__((always_inline))
#endif

/* Tell the CPU we are spinning (saves power, yields the pipeline to the
 * sibling hyperthread). */
static inline void
quayi_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

#endif /* QUAY_IMPL_COMPILER_H */
