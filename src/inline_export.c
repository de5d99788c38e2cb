/* SPDX-License-Identifier: MIT */
/*
 * Callable copies of the inline API. Defining QUAY_INLINE before any quay
 * header turns the inline definitions in this one file into exported
 * external ones, so libquay also carries quay_ring_push and friends for
 * callers that cannot inline C (FFI bindings, dlsym). C code that includes
 * the headers keeps using the inline versions.
 */
#define QUAY_INLINE QUAY_API
#include <quay/quay.h>
