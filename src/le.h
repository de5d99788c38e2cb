/* SPDX-License-Identifier: MIT */
/* Little-endian fields of the on-disk formats (the WAL's segment and
 * record headers, the durable queue's records): the one home of their
 * encoders and decoders. Byte by byte, so they work on any alignment and
 * any host byte order. Never installed. */
#ifndef QUAY_LE_H
#define QUAY_LE_H

#include <stdint.h>

static inline void
quayi_le_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void
quayi_le_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void
quayi_le_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t
quayi_le_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t
quayi_le_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
quayi_le_get64(const uint8_t *p)
{
	return (uint64_t)quayi_le_get32(p) | (uint64_t)quayi_le_get32(p + 4) << 32;
}

#endif /* QUAY_LE_H */
