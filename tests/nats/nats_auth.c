/* SPDX-License-Identifier: MIT */
/* Connection options against real nats-servers started here: a token, a
 * user and password (in the URL), an nkey user (the key pair made with
 * the openssl CLI at test time and encoded here as NATS does), TLS with
 * a throwaway CA and server and client certificates made with the
 * openssl CLI at test time, and the reconnect policy. Bad credentials,
 * seeds and certificates must fail with a clear error, never connect. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <nats/nats.h>

#include <quay/bus.h>
#include <quay/nats.h>
#include <quay/pool.h>

#include "nats_server.h"

static char dir[64];
static quay_pool *pool;

static void
sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0) {
		fprintf(stderr, "failed: %s\n", cmd);
		exit(2);
	}
}

static void
write_file(const char *name, const char *text)
{
	char p[128];
	FILE *f;
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(p);
		exit(2);
	}
}

/* A server on a free port with the config text conf (written to name). */
static void
start_conf(struct test_server *s, const char *name, const char *conf)
{
	static char path[8][128];
	static int k;
	char *p = path[k++ % 8];

	write_file(name, conf);
	snprintf(p, 128, "%s/%s", dir, name);
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->conf = p;
	s->port = ts_free_port();
	snprintf(s->url, sizeof(s->url), "nats://127.0.0.1:%d", s->port);
	ts_start(s);
}

static int
grp_setup(void **st)
{
	(void)st;
	snprintf(dir, sizeof(dir), "/tmp/quay-nats-auth-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	/* A CA, a server certificate for 127.0.0.1, a client certificate,
	 * and a second CA that signed neither. */
	sh("cd '%s' && "
	   "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	   "-keyout ca.key -out ca.pem -days 2 -subj /CN=quay-test-ca 2>/dev/null && "
	   "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	   "-keyout other.key -out other-ca.pem -days 2 -subj /CN=quay-other-ca 2>/dev/null && "
	   "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > srv.ext && "
	   "printf 'extendedKeyUsage=clientAuth\\n' > cli.ext && "
	   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	   "-keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && "
	   "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	   "-out server.pem -days 2 -extfile srv.ext 2>/dev/null && "
	   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
	   "-keyout client.key -out client.csr -subj /CN=quay-client 2>/dev/null && "
	   "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	   "-out client.pem -days 2 -extfile cli.ext 2>/dev/null",
	    dir);
	return quay_pool_create((size_t)16 << 20, NULL, &pool);
}

static int
grp_teardown(void **st)
{
	(void)st;
	sh("rm -rf '%s'", dir);
	return quay_pool_destroy(pool);
}

static char *
file(const char *name)
{
	static char p[8][128];
	static int k;
	char *r = p[k++ % 8];
	snprintf(r, 128, "%s/%s", dir, name);
	return r;
}

static int
try_connect(struct quay_nats_opts *o, const char *url, quay_nats **n)
{
	o->urls = &url;
	o->nurls = 1;
	o->connect_timeout_ns = 2000000000;
	*n = NULL;
	return quay_nats_connect(o, n);
}

/* A plain libnats client with the same credentials (a second quay handle
 * in this process would drop the first one's messages as echoes). */
static natsConnection *
plain(const char *url, const struct quay_nats_opts *o)
{
	natsOptions *no;
	natsConnection *nc = NULL;

	assert_int_equal(natsOptions_Create(&no), NATS_OK);
	assert_int_equal(natsOptions_SetURL(no, url), NATS_OK);
	if (o->token != NULL)
		assert_int_equal(natsOptions_SetToken(no, o->token), NATS_OK);
	if (o->nkey != NULL)
		assert_int_equal(natsOptions_SetNKeyFromSeed(no, o->nkey, o->nkey_seed_file), NATS_OK);
	if (o->tls_ca_file != NULL) {
		assert_int_equal(natsOptions_SetSecure(no, true), NATS_OK);
		assert_int_equal(natsOptions_LoadCATrustedCertificates(no, o->tls_ca_file), NATS_OK);
		assert_int_equal(natsOptions_LoadCertificatesChain(no, o->tls_cert_file, o->tls_key_file),
		    NATS_OK);
	}
	assert_int_equal(natsConnection_Connect(&nc, no), NATS_OK);
	natsOptions_Destroy(no);
	return nc;
}

/* Traffic both ways over quay's connection: an export reaches the plain
 * client, the plain client's publish reaches an import. Closes n. */
static void
roundtrip(quay_nats *n, natsConnection *nc, const char *subject)
{
	char back[64];
	natsSubscription *ps;
	natsMsg *nm;
	quay_bus *bus;
	quay_sub *sub;
	quay_msg *m;

	snprintf(back, sizeof(back), "%s.back", subject);
	assert_int_equal(quay_bus_create(NULL, &bus), 0);
	assert_int_equal(quay_bus_subscribe(bus, back, NULL, &sub), 0);
	assert_int_equal(quay_nats_import(n, bus, back, NULL), 0);
	assert_int_equal(quay_nats_export(n, bus, subject), 0);
	assert_int_equal(quay_nats_flush(n, 5000000000), 0);
	assert_int_equal(natsConnection_SubscribeSync(&ps, nc, subject), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);
	assert_int_equal(quay_msg_new(pool, "sealed", 6, &m), 0);
	assert_int_equal(quay_bus_publish(bus, subject, m), 1);
	assert_int_equal(natsSubscription_NextMsg(&nm, ps, 5000), NATS_OK);
	assert_int_equal(natsMsg_GetDataLength(nm), 6);
	assert_memory_equal(natsMsg_GetData(nm), "sealed", 6);
	natsMsg_Destroy(nm);
	assert_int_equal(natsConnection_PublishString(nc, back, "back"), NATS_OK);
	assert_int_equal(natsConnection_Flush(nc), NATS_OK);
	assert_int_equal(quay_sub_receive(sub, &m, 5000000000), 0);
	assert_int_equal(quay_msg_body_len(m), 4);
	assert_memory_equal(quay_msg_body(m), "back", 4);
	quay_msg_unref(m);
	quay_nats_close(n);
	natsSubscription_Destroy(ps);
	natsConnection_Destroy(nc);
	quay_bus_unsubscribe(sub);
	quay_bus_destroy(bus);
}

static void
test_token(void **st)
{
	struct test_server s;
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	quay_nats *a;
	(void)st;

	start_conf(&s, "token.conf", "authorization { token: \"s3cret-token\" }\n");
	o.token = "s3cret-token";
	assert_int_equal(try_connect(&o, s.url, &a), 0);
	roundtrip(a, plain(s.url, &o), "auth.token");
	o.token = "wrong-token";
	assert_int_equal(try_connect(&o, s.url, &a), -EACCES);
	assert_null(a);
	o.token = NULL;
	assert_int_equal(try_connect(&o, s.url, &a), -EACCES);
	ts_stop(&s, SIGTERM);
}

static void
test_user_password(void **st)
{
	struct test_server s;
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	char good[96], bad[96];
	quay_nats *a;
	(void)st;

	start_conf(&s, "user.conf", "authorization { user: quay, password: \"pw-1234\" }\n");
	snprintf(good, sizeof(good), "nats://quay:pw-1234@127.0.0.1:%d", s.port);
	snprintf(bad, sizeof(bad), "nats://quay:nope@127.0.0.1:%d", s.port);
	assert_int_equal(try_connect(&o, good, &a), 0);
	roundtrip(a, plain(good, &o), "auth.user");
	assert_int_equal(try_connect(&o, bad, &a), -EACCES);
	assert_int_equal(try_connect(&o, s.url, &a), -EACCES);
	ts_stop(&s, SIGTERM);
}

/* ---- nkeys: an ed25519 key pair from openssl, encoded as NATS's nkeys
 * library does (prefix byte(s), the 32-byte key, a CRC-16/XMODEM of those
 * little-endian, RFC 4648 base32 without padding). */

static uint16_t
crc16(const unsigned char *p, size_t n)
{
	uint16_t c = 0;
	for (size_t i = 0; i < n; i++) {
		c ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
	}
	return c;
}

static void
base32(char *out, const unsigned char *p, size_t n)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	unsigned buf = 0, bits = 0;
	for (size_t i = 0; i < n; i++) {
		buf = buf << 8 | p[i];
		bits += 8;
		while (bits >= 5) {
			*out++ = a[(buf >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		*out++ = a[(buf << (5 - bits)) & 31];
	*out = '\0';
}

/* The last 32 bytes of a DER file (the raw key in PKCS#8 and SPKI). */
static void
der_key(const char *name, unsigned char key[32])
{
	unsigned char b[128];
	size_t n;
	FILE *f = fopen(file(name), "rb");
	assert_non_null(f);
	n = fread(b, 1, sizeof(b), f);
	fclose(f);
	assert_true(n >= 32);
	memcpy(key, b + n - 32, 32);
}

/* A user nkey pair "tag": pub gets "U..." (56 chars), seed "SU..." (58). */
static void
make_nkey(const char *tag, char pub[64], char seed[64])
{
	unsigned char raw[40];
	uint16_t c;

	sh("cd '%s' && openssl genpkey -algorithm ed25519 -outform DER -out %s.der 2>/dev/null && "
	   "openssl pkey -inform DER -in %s.der -pubout -outform DER -out %s.pub.der",
	    dir, tag, tag, tag);
	raw[0] = 20 << 3; /* user */
	der_key(strcat(strcpy((char[32]){ 0 }, tag), ".pub.der"), raw + 1);
	c = crc16(raw, 33);
	raw[33] = (unsigned char)(c & 0xff);
	raw[34] = (unsigned char)(c >> 8);
	base32(pub, raw, 35);
	raw[0] = (18 << 3) | ((20 << 3) >> 5); /* seed, of a user */
	raw[1] = (unsigned char)(((20 << 3) & 31) << 3);
	der_key(strcat(strcpy((char[32]){ 0 }, tag), ".der"), raw + 2);
	c = crc16(raw, 34);
	raw[34] = (unsigned char)(c & 0xff);
	raw[35] = (unsigned char)(c >> 8);
	base32(seed, raw, 36);
	assert_int_equal(strlen(pub), 56);
	assert_int_equal(strlen(seed), 58);
	assert_memory_equal(seed, "SU", 2);
}

static void
test_nkey(void **st)
{
	struct test_server s;
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	char pub[64], seed[64], pub2[64], seed2[64], conf[256], text[128];
	quay_nats *a;
	(void)st;

	make_nkey("u1", pub, seed);
	make_nkey("u2", pub2, seed2);
	snprintf(conf, sizeof(conf), "authorization { users = [ { nkey: \"%s\" } ] }\n", pub);
	start_conf(&s, "nkey.conf", conf);
	/* The seed file as NATS's tools write it: the seed on a line. */
	snprintf(text, sizeof(text), "%s\n", seed);
	write_file("u1.nk", text);
	snprintf(text, sizeof(text), "%s\n", seed2);
	write_file("u2.nk", text);

	o.nkey = pub;
	o.nkey_seed_file = file("u1.nk");
	assert_int_equal(try_connect(&o, s.url, &a), 0);
	roundtrip(a, plain(s.url, &o), "auth.nkey");
	/* The seed of another key: the signature does not verify. */
	o.nkey_seed_file = file("u2.nk");
	assert_int_equal(try_connect(&o, s.url, &a), -EACCES);
	/* A key pair the server does not list. */
	o.nkey = pub2;
	assert_int_equal(try_connect(&o, s.url, &a), -EACCES);
	/* No credentials at all. */
	o.nkey = o.nkey_seed_file = NULL;
	assert_int_equal(try_connect(&o, s.url, &a), -EACCES);

	/* Bad seed files: refused before connecting, with a clear code. */
	o.nkey = pub;
	o.nkey_seed_file = file("missing.nk");
	assert_int_equal(try_connect(&o, s.url, &a), -ENOENT);
	write_file("empty.nk", "");
	o.nkey_seed_file = file("empty.nk");
	assert_int_equal(try_connect(&o, s.url, &a), -EBADMSG);
	write_file("noseed.nk", "-----BEGIN USER NKEY SEED-----\nnot a seed\n");
	o.nkey_seed_file = file("noseed.nk");
	assert_int_equal(try_connect(&o, s.url, &a), -EBADMSG);
	/* One character changed: the checksum no longer matches. */
	snprintf(text, sizeof(text), "%s\n", seed);
	text[20] = text[20] == 'A' ? 'B' : 'A';
	write_file("flip.nk", text);
	o.nkey_seed_file = file("flip.nk");
	assert_int_equal(try_connect(&o, s.url, &a), -EBADMSG);
	/* Cut short: not a whole seed. */
	snprintf(text, sizeof(text), "%.30s\n", seed);
	write_file("short.nk", text);
	o.nkey_seed_file = file("short.nk");
	assert_int_equal(try_connect(&o, s.url, &a), -EBADMSG);
	ts_stop(&s, SIGTERM);
}

static void
test_tls(void **st)
{
	struct test_server s;
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	char conf[1024], tls_url[64];
	quay_nats *a, *b;
	(void)st;

	/* Mutual TLS: the server checks the client's certificate too. */
	snprintf(conf, sizeof(conf),
	    "tls {\n  cert_file: \"%s\"\n  key_file: \"%s\"\n  ca_file: \"%s\"\n  verify: true\n  timeout: 2\n}\n",
	    file("server.pem"), file("server.key"), file("ca.pem"));
	start_conf(&s, "tls.conf", conf);
	snprintf(tls_url, sizeof(tls_url), "tls://127.0.0.1:%d", s.port);

	o.tls_ca_file = file("ca.pem");
	o.tls_cert_file = file("client.pem");
	o.tls_key_file = file("client.key");
	assert_int_equal(try_connect(&o, s.url, &a), 0); /* the CA file turns TLS on */
	roundtrip(a, plain(s.url, &o), "auth.tls");
	assert_int_equal(try_connect(&o, tls_url, &b), 0);
	roundtrip(b, plain(tls_url, &o), "auth.tls2");

	/* No client certificate: the server refuses the handshake. */
	o.tls_cert_file = o.tls_key_file = NULL;
	assert_int_equal(try_connect(&o, s.url, &a), -EPROTO);
	assert_null(a);
	/* A server certificate our CA did not sign. */
	o.tls_ca_file = file("other-ca.pem");
	o.tls_cert_file = file("client.pem");
	o.tls_key_file = file("client.key");
	assert_int_equal(try_connect(&o, s.url, &a), -EPROTO);
	assert_null(a);
	/* Without TLS at all: the server requires it. */
	o.tls_ca_file = o.tls_cert_file = o.tls_key_file = NULL;
	assert_int_equal(try_connect(&o, s.url, &a), -EPROTO);
	assert_null(a);
	/* Missing files: said before any connect. */
	o.tls_ca_file = file("absent.pem");
	assert_int_equal(try_connect(&o, s.url, &a), -ENOENT);
	o.tls_ca_file = file("ca.pem");
	o.tls_cert_file = file("client.pem");
	o.tls_key_file = file("absent.key");
	assert_int_equal(try_connect(&o, s.url, &a), -ENOENT);
	ts_stop(&s, SIGTERM);
}

static void
wait_for(quay_nats *n, bool want, int64_t max_ms)
{
	for (int64_t i = 0; i < max_ms / 10 && quay_nats_connected(n) != want; i++)
		usleep(10000);
}

/* Reconnect policy: forever (-1) comes back after a restart on the same
 * port; a bounded count gives up and the handle reports closed. */
static void
test_reconnect_policy(void **st)
{
	struct test_server s;
	struct quay_nats_opts o = QUAY_NATS_OPTS_INIT;
	struct quay_nats_counters c;
	quay_nats *fo, *few;
	quay_msg *m;
	(void)st;

	start_conf(&s, "plain.conf", "# plain\n");
	o.reconnect_wait_ns = 50000000;
	o.max_reconnect = -1;
	assert_int_equal(try_connect(&o, s.url, &fo), 0);
	o.max_reconnect = 2;
	assert_int_equal(try_connect(&o, s.url, &few), 0);
	ts_stop(&s, SIGKILL);
	wait_for(few, false, 5000);
	assert_false(quay_nats_connected(few));
	/* Two attempts 50 ms apart, then closed: give it ample time. */
	usleep(1500000);
	ts_start(&s);
	wait_for(fo, true, 10000);
	assert_true(quay_nats_connected(fo));
	/* The counters come from libnats' callback thread, which runs after
	 * the status turns to connected: wait for them, bounded. */
	for (int i = 0; i < 500; i++) {
		assert_int_equal(quay_nats_counters(fo, &c), 0);
		if (c.reconnects != 0)
			break;
		usleep(10000);
	}
	assert_int_equal(c.disconnects, 1);
	assert_int_equal(c.reconnects, 1);
	/* The bounded handle gave up for good: closed, publishes refused. */
	usleep(500000);
	assert_false(quay_nats_connected(few));
	assert_int_equal(quay_nats_counters(few, &c), 0);
	assert_int_equal(c.reconnects, 0);
	assert_int_equal(quay_msg_new(pool, "x", 1, &m), 0);
	assert_int_equal(quay_nats_publish(few, "after.close", m), -ENOTCONN);
	assert_int_equal(quay_nats_counters(few, &c), 0);
	assert_int_equal(c.refused, 1);
	assert_int_equal(c.last_error, -ENOTCONN);
	assert_int_equal(quay_nats_publish(fo, "after.restart", m), 0);
	quay_msg_unref(m);
	quay_nats_close(fo);
	quay_nats_close(few);
	ts_stop(&s, SIGTERM);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token),
		cmocka_unit_test(test_user_password),
		cmocka_unit_test(test_nkey),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_reconnect_policy),
	};
	return cmocka_run_group_tests(tests, grp_setup, grp_teardown);
}
