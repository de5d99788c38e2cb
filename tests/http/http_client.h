/* SPDX-License-Identifier: MIT */
/*
 * A minimal blocking HTTP/1.1 client for the HTTP endpoint's tests: one
 * request per connection ("Connection: close"), the whole response read
 * until the server closes. Test code only.
 */
#ifndef QUAY_TEST_HTTP_CLIENT_H
#define QUAY_TEST_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

struct hc_resp {
	int status; /* 0: no status line (connection failed or closed) */
	char *raw;  /* the whole response, NUL-terminated */
	size_t len;
	const char *body; /* into raw; "" if none */
	size_t body_len;
};

static inline void
hc_free(struct hc_resp *r)
{
	free(r->raw);
	memset(r, 0, sizeof(*r));
}

/* Send `req` (raw bytes) to 127.0.0.1:port and read the response. */
static inline int
hc_raw(uint16_t port, const char *req, size_t reqlen, struct hc_resp *r)
{
	struct sockaddr_in a;
	struct timeval tv = { 30, 0 };
	size_t cap = 65536;
	int fd;

	memset(r, 0, sizeof(*r));
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -errno;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	for (size_t off = 0; off < reqlen;) {
		ssize_t n = send(fd, req + off, reqlen - off, MSG_NOSIGNAL);
		if (n <= 0)
			break; /* the server may close early (oversized): read what it said */
		off += (size_t)n;
	}
	r->raw = malloc(cap);
	if (r->raw == NULL) {
		close(fd);
		return -ENOMEM;
	}
	for (;;) {
		ssize_t n;
		if (r->len + 1 >= cap) {
			char *p = realloc(r->raw, cap * 2);
			if (p == NULL)
				break;
			r->raw = p;
			cap *= 2;
		}
		n = recv(fd, r->raw + r->len, cap - r->len - 1, 0);
		if (n <= 0)
			break;
		r->len += (size_t)n;
	}
	close(fd);
	r->raw[r->len] = '\0';
	if (sscanf(r->raw, "HTTP/1.%*d %d", &r->status) != 1)
		r->status = 0;
	r->body = strstr(r->raw, "\r\n\r\n");
	if (r->body != NULL) {
		r->body += 4;
		r->body_len = r->len - (size_t)(r->body - r->raw);
	} else {
		r->body = "";
	}
	return 0;
}

/* METHOD path with an optional extra header line (without CRLF). */
static inline int
hc_req(uint16_t port, const char *method, const char *path, const char *hdr, struct hc_resp *r)
{
	char req[2048];
	int n =
	    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s\r\n",
	        method, path, hdr != NULL ? hdr : "", hdr != NULL ? "\r\n" : "");

	return hc_raw(port, req, (size_t)n, r);
}

static inline int
hc_get(uint16_t port, const char *path, struct hc_resp *r)
{
	return hc_req(port, "GET", path, NULL, r);
}

/* The value of a response header (case-insensitive name), copied into
 * out; NULL if absent. */
static inline const char *
hc_header(const struct hc_resp *r, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = strstr(r->raw, "\r\n");

	while (p != NULL && p < r->body) {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1, *e;
			size_t n;
			while (*v == ' ')
				v++;
			e = strstr(v, "\r\n");
			n = e != NULL ? (size_t)(e - v) : strlen(v);
			if (n >= cap)
				n = cap - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return out;
		}
		p = strstr(p, "\r\n");
	}
	return NULL;
}

#endif /* QUAY_TEST_HTTP_CLIENT_H */
