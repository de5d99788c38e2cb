/* SPDX-License-Identifier: MIT */
/* Private helpers shared by the files in src/. Never installed. */
#ifndef QUAY_INTERNAL_H
#define QUAY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#endif /* QUAY_INTERNAL_H */
