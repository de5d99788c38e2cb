/* SPDX-License-Identifier: MIT */
/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by the
 * WAL's records (docs/WAL-FORMAT.md).
 *
 * Two implementations:
 *   - the SSE4.2 crc32 instruction (8 bytes per instruction), compiled
 *     with a target attribute so the rest of the library stays baseline
 *     x86-64, and chosen at run time with __builtin_cpu_supports;
 *   - a slicing-by-8 table fallback (8 KiB of tables built on first use),
 *     about 1-2 bytes per cycle.
 * Both take and return the "finalised" value (pre- and post-inverted), so
 * crc32c(crc32c(0, a), b) is the CRC of a followed by b.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <pthread.h>

#include "wal_internal.h"

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1u) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] =
			    (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xffu];
}

static inline uint64_t
load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

uint32_t
quayi_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	/* pthread_once: the tables are built once, and the once-barrier
	 * orders their writes before every reader. */
	pthread_once(&crc_once, crc_table_init);
	while (len > 0 && ((uintptr_t)p & 7u) != 0) {
		c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xffu];
		len--;
	}
	while (len >= 8) {
		uint64_t v = load_le64(p) ^ c;
		c = crc_table[7][v & 0xffu] ^ crc_table[6][(v >> 8) & 0xffu] ^
		    crc_table[5][(v >> 16) & 0xffu] ^ crc_table[4][(v >> 24) & 0xffu] ^
		    crc_table[3][(v >> 32) & 0xffu] ^ crc_table[2][(v >> 40) & 0xffu] ^
		    crc_table[1][(v >> 48) & 0xffu] ^ crc_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xffu];
	return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t
quayi_crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	while (len > 0 && ((uintptr_t)p & 7u) != 0) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		len--;
	}
	/* Three independent streams would hide the instruction's 3-cycle
	 * latency; one stream (about 8 bytes per 3 cycles) is already far
	 * beyond the disk, so keep it simple. */
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

bool
quayi_crc32c_hw_available(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
}
#else
uint32_t
quayi_crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
	return quayi_crc32c_sw(crc, buf, len);
}

bool
quayi_crc32c_hw_available(void)
{
	return false;
}
#endif

/* 0: not chosen yet, 1: software, 2: hardware. Relaxed is enough: every
 * thread computes the same answer, and the implementations share no state
 * that this flag would have to publish (the software tables have their own
 * pthread_once). */
static int crc_impl;

uint32_t
quayi_crc32c(uint32_t crc, const void *buf, size_t len)
{
	int impl = __atomic_load_n(&crc_impl, __ATOMIC_RELAXED);

	if (impl == 0) {
		impl = quayi_crc32c_hw_available() ? 2 : 1;
		__atomic_store_n(&crc_impl, impl, __ATOMIC_RELAXED);
	}
	return impl == 2 ? quayi_crc32c_hw(crc, buf, len) : quayi_crc32c_sw(crc, buf, len);
}
