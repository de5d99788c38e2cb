/* SPDX-License-Identifier: MIT */
/*
 * quay_strerror() and the documented error codes, kept in sync.
 *
 * meson passes the path of every installed public header as arguments,
 * optionally preceded by "--dir DIR" for each include directory. The
 * test:
 *   - checks quay_strerror() on 0 and every code of the list in err.h
 *     (distinct texts, both signs, "unknown error" for codes quay never
 *     returns);
 *   - scans every header for tokens -EXXX and fails if one names a code
 *     this test's table does not know, or one quay_strerror() calls
 *     "unknown error";
 *   - checks the reverse: every code quay_strerror() names is listed in
 *     err.h;
 *   - checks that every *.h in each --dir was passed, so the hard-coded
 *     list in tests/unit/meson.build cannot silently miss a new header.
 */
#include "quay_test.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>

#include <quay/err.h>

static const char *const UNKNOWN = "unknown error";

/* The codes err.h documents as quay's. */
static const int quay_codes[] = {
	EAGAIN,
	EINVAL,
	ENOMEM,
	ETIMEDOUT,
	EPIPE,
	EMSGSIZE,
	EIO,
	EBADMSG,
	ENOSPC,
	ESTALE,
	ENOENT,
};

/* Name -> value for the errno names a header might mention. Wider than
 * quay's list so that a header documenting, say, -EBUSY is reported as
 * "quay_strerror does not name EBUSY" rather than "unknown name". */
#define E(x) \
	{ \
#x, x \
	}
static const struct errname {
	const char *name;
	int value;
} errnames[] = {
	E(EPERM),
	E(ENOENT),
	E(ESRCH),
	E(EINTR),
	E(EIO),
	E(ENXIO),
	E(E2BIG),
	E(ENOEXEC),
	E(EBADF),
	E(ECHILD),
	E(EAGAIN),
	E(EWOULDBLOCK),
	E(ENOMEM),
	E(EACCES),
	E(EFAULT),
	E(EBUSY),
	E(EEXIST),
	E(EXDEV),
	E(ENODEV),
	E(ENOTDIR),
	E(EISDIR),
	E(EINVAL),
	E(ENFILE),
	E(EMFILE),
	E(ENOTTY),
	E(ETXTBSY),
	E(EFBIG),
	E(ENOSPC),
	E(ESPIPE),
	E(EROFS),
	E(EMLINK),
	E(EPIPE),
	E(EDOM),
	E(ERANGE),
	E(EDEADLK),
	E(ENAMETOOLONG),
	E(ENOLCK),
	E(ENOSYS),
	E(ENOTEMPTY),
	E(ELOOP),
	E(ENOMSG),
	E(EIDRM),
	E(ENODATA),
	E(ETIME),
	E(EOVERFLOW),
	E(EBADMSG),
	E(EILSEQ),
	E(ENOTSUP),
	E(EOPNOTSUPP),
	E(EMSGSIZE),
	E(ENOBUFS),
	E(EALREADY),
	E(EINPROGRESS),
	E(ECANCELED),
	E(ETIMEDOUT),
	E(ECONNRESET),
	E(ENOTCONN),
	E(ESHUTDOWN),
	E(ECONNREFUSED),
	E(EADDRINUSE),
	E(ESTALE),
	E(EDQUOT),
	E(ENOTRECOVERABLE),
	E(EOWNERDEAD),
	E(EPROTO),
	E(ENOTSOCK),
	E(EHOSTUNREACH),
	E(ENETDOWN),
};
#undef E

static int g_argc;
static char **g_argv;

static const struct errname *
lookup(const char *name)
{
	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (strcmp(errnames[i].name, name) == 0)
			return &errnames[i];
	return NULL;
}

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	long len;

	if (fp == NULL)
		return NULL;
	if (fseek(fp, 0, SEEK_END) == 0 && (len = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)len + 1);
		if (buf != NULL) {
			size_t got = fread(buf, 1, (size_t)len, fp);
			buf[got] = '\0';
		}
	}
	fclose(fp);
	return buf;
}

/* Calls fn for each token "-E[A-Z0-9]+" of text that stands alone (not
 * preceded by a letter, digit or underscore, not followed by a lower-case
 * letter or underscore). Returns how many. */
static size_t
scan_codes(const char *text, void (*fn)(const char *name, void *arg), void *arg)
{
	size_t found = 0;

	for (const char *p = text; (p = strstr(p, "-E")) != NULL; p++) {
		const char *q = p + 2;
		char name[64];
		size_t n;

		if (p > text && (isalnum((unsigned char)p[-1]) || p[-1] == '_'))
			continue;
		while (isupper((unsigned char)*q) || isdigit((unsigned char)*q))
			q++;
		n = (size_t)(q - (p + 1)); /* "E..." without the '-' */
		if (n < 2 || n >= sizeof(name) || islower((unsigned char)*q) || *q == '_')
			continue;
		memcpy(name, p + 1, n);
		name[n] = '\0';
		fn(name, arg);
		found++;
	}
	return found;
}

static const char *
base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* ---- quay_strerror ------------------------------------------------ */

static void
test_strerror_success(void **state)
{
	(void)state;
	assert_non_null(quay_strerror(0));
	assert_string_not_equal(quay_strerror(0), UNKNOWN);
	assert_true(strlen(quay_strerror(0)) > 0);
}

static void
test_strerror_known_codes(void **state)
{
	enum { N = sizeof(quay_codes) / sizeof(quay_codes[0]) };
	const char *texts[N + 1];

	(void)state;
	texts[N] = quay_strerror(0);
	for (size_t i = 0; i < N; i++) {
		const char *neg = quay_strerror(-quay_codes[i]);
		const char *pos = quay_strerror(quay_codes[i]);

		assert_non_null(neg);
		assert_non_null(pos);
		if (strcmp(neg, UNKNOWN) == 0)
			fail_msg("quay_strerror(-%d) is \"unknown error\"", quay_codes[i]);
		assert_true(strlen(neg) > 0);
		/* Both signs give the same text. */
		assert_string_equal(neg, pos);
		texts[i] = neg;
	}
	/* Every code (and success) has its own text. */
	for (size_t i = 0; i <= N; i++)
		for (size_t j = i + 1; j <= N; j++)
			if (strcmp(texts[i], texts[j]) == 0)
				fail_msg("codes #%zu and #%zu share the text \"%s\"", i, j, texts[i]);
}

/*
 * Each text must fit every place that returns its code (found by grepping
 * every `return -E...` in src/): a word per kind of place. A code that
 * gains a new kind of place needs its text, and this table, updated.
 */
static const struct place {
	int code;
	const char *word;  /* must appear in quay_strerror(code) */
	const char *where; /* the places it stands for */
} places[] = {
	{ EAGAIN, "full", "ring/pq/queue/subscription full (push, send, REJECT)" },
	{ EAGAIN, "empty", "ring/pq/queue empty (pop, receive)" },
	{ EAGAIN, "in use", "quay_pool_destroy with messages still referenced" },
	{ EAGAIN, "locked", "quay_wal_open of a log another open holds (flock)" },
	{ ESTALE, "acked", "ack/nack/extend of a lease already acked or nacked" },
	{ ESTALE, "expired", "ack/nack/extend after the lease's deadline" },
	{ ENOSPC, "device", "the WAL's device is full" },
	{ ENOSPC, "header", "a header or reply-to does not fit in the message" },
	{ ENOSPC, "buffer", "quay_stats_format_* into a too small buffer" },
	{ ENOSPC, "capacity", "durable recovery: more messages than the queue holds" },
	{ ENOMEM, "memory", "malloc failed" },
	{ ENOMEM, "limit",
	    "pool exhausted (also for a durable send's copy), max_subs, max_requests, registry full" },
	{ EMSGSIZE, "too large", "body/capacity over the largest class; WAL record" },
	{ EIO, "log", "WAL write/sync/read failure" },
};

static void
test_strerror_fits_places(void **state)
{
	size_t bad = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++) {
		if (strstr(quay_strerror(-places[i].code), places[i].word) != NULL)
			continue;
		print_error("quay_strerror(-%d) = \"%s\" does not fit \"%s\" (no \"%s\")\n", places[i].code,
		    quay_strerror(-places[i].code), places[i].where, places[i].word);
		bad++;
	}
	if (bad != 0)
		fail_msg("%zu places whose code's text does not fit them", bad);
}

static void
test_strerror_unknown(void **state)
{
	static const int unknown[] = {
		-9999,
		9999,
		INT_MAX,
		INT_MIN + 1,
		-EPERM,
		-ENOSYS,
		-100000,
	};

	(void)state;
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		const char *s = quay_strerror(unknown[i]);

		assert_non_null(s);
		if (strcmp(s, UNKNOWN) != 0)
			fail_msg("quay_strerror(%d) = \"%s\", expected \"unknown error\"", unknown[i], s);
	}
}

/* INT_MIN has no positive counterpart: quay_strerror must not negate it
 * (signed overflow; UBSan with halt_on_error catches it). */
static void
test_strerror_int_min(void **state)
{
	const char *s;

	(void)state;
	s = quay_strerror(INT_MIN);
	assert_non_null(s);
	assert_string_equal(s, UNKNOWN);
}

/* ---- documented codes vs quay_strerror ---------------------------- */

struct scan_state {
	const char *path;
	int bad;
	size_t ok;
};

static void
check_documented(const char *name, void *arg)
{
	struct scan_state *st = arg;
	const struct errname *e = lookup(name);

	if (e == NULL) {
		print_error("%s: documents -%s, which this test's table does not know\n", st->path, name);
		st->bad++;
	} else if (strcmp(quay_strerror(-e->value), UNKNOWN) == 0) {
		print_error("%s: documents -%s, but quay_strerror(-%s) is \"unknown error\"\n", st->path,
		    name, name);
		st->bad++;
	} else {
		st->ok++;
	}
}

static int
header_count(void)
{
	int n = 0;

	for (int i = 1; i < g_argc; i++) {
		if (strcmp(g_argv[i], "--dir") == 0) {
			i++;
			continue;
		}
		n++;
	}
	return n;
}

static void
test_documented_codes_known(void **state)
{
	size_t total = 0;
	int bad = 0;

	(void)state;
	if (header_count() == 0)
		fail_msg("no header paths given (meson passes them as arguments)");
	for (int i = 1; i < g_argc; i++) {
		struct scan_state st = { g_argv[i], 0, 0 };
		char *text;

		if (strcmp(g_argv[i], "--dir") == 0) {
			i++;
			continue;
		}
		text = slurp(g_argv[i]);
		if (text == NULL)
			fail_msg("cannot read %s", g_argv[i]);
		scan_codes(text, check_documented, &st);
		free(text);
		bad += st.bad;
		total += st.ok;
	}
	/* ring.h alone documents several; finding none means the scan broke. */
	assert_true(total > 0);
	assert_int_equal(bad, 0);
}

/* Every code quay_strerror names appears in err.h's list. */
struct mark_state {
	bool seen[sizeof(errnames) / sizeof(errnames[0])];
};

static void
mark_seen(const char *name, void *arg)
{
	struct mark_state *st = arg;
	const struct errname *e = lookup(name);

	if (e != NULL)
		st->seen[e - errnames] = true;
}

static void
test_named_codes_documented_in_err_h(void **state)
{
	struct mark_state st;
	const char *err_h = NULL;
	char *text;
	int bad = 0;

	(void)state;
	memset(&st, 0, sizeof(st));
	for (int i = 1; i < g_argc; i++) {
		if (strcmp(g_argv[i], "--dir") == 0) {
			i++;
			continue;
		}
		if (strcmp(base_name(g_argv[i]), "err.h") == 0)
			err_h = g_argv[i];
	}
	if (err_h == NULL)
		fail_msg("err.h is not among the header arguments");
	text = slurp(err_h);
	if (text == NULL)
		fail_msg("cannot read %s", err_h);
	scan_codes(text, mark_seen, &st);
	free(text);

	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++) {
		int v = errnames[i].value;
		bool named = strcmp(quay_strerror(-v), UNKNOWN) != 0;
		bool listed = st.seen[i];

		/* EWOULDBLOCK == EAGAIN, EOPNOTSUPP == ENOTSUP: an alias counts. */
		for (size_t j = 0; j < sizeof(errnames) / sizeof(errnames[0]) && !listed; j++)
			listed = st.seen[j] && errnames[j].value == v;
		if (named && !listed) {
			print_error("quay_strerror names %s, which err.h does not list\n", errnames[i].name);
			bad++;
		}
	}
	/* And the list in this test matches err.h too. */
	for (size_t i = 0; i < sizeof(quay_codes) / sizeof(quay_codes[0]); i++) {
		bool listed = false;

		for (size_t j = 0; j < sizeof(errnames) / sizeof(errnames[0]); j++)
			listed |= st.seen[j] && errnames[j].value == quay_codes[i];
		if (!listed) {
			print_error("err.h does not list code %d of this test's list\n", quay_codes[i]);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

/* The hard-coded header list in meson.build covers every header present. */
static void
test_header_list_complete(void **state)
{
	int missing = 0, dirs = 0;

	(void)state;
	for (int i = 1; i + 1 < g_argc; i++) {
		DIR *d;
		struct dirent *de;

		if (strcmp(g_argv[i], "--dir") != 0)
			continue;
		dirs++;
		d = opendir(g_argv[i + 1]);
		if (d == NULL)
			fail_msg("cannot open %s", g_argv[i + 1]);
		while ((de = readdir(d)) != NULL) {
			size_t len = strlen(de->d_name);
			bool listed = false;

			if (len < 3 || strcmp(de->d_name + len - 2, ".h") != 0)
				continue;
			for (int j = 1; j < g_argc && !listed; j++) {
				const char *a = g_argv[j];
				size_t dl = strlen(g_argv[i + 1]);

				if (strcmp(g_argv[j], "--dir") == 0) {
					j++;
					continue;
				}
				/* a == DIR/name (DIR as given, with or without a slash). */
				if (strncmp(a, g_argv[i + 1], dl) == 0) {
					const char *rest = a + dl;
					while (*rest == '/')
						rest++;
					listed = strcmp(rest, de->d_name) == 0;
				}
			}
			if (!listed) {
				print_error("%s/%s is not in the header list of tests/unit/meson.build\n",
				    g_argv[i + 1], de->d_name);
				missing++;
			}
		}
		closedir(d);
	}
	if (dirs == 0)
		skip();
	assert_int_equal(missing, 0);
}

/* The scanner itself: what counts as a documented code. */
static int scan_hits;

static void
count_hit(const char *name, void *arg)
{
	(void)name;
	(void)arg;
	scan_hits++;
}

static void
test_scanner(void **state)
{
	(void)state;
	scan_hits = 0;
	assert_int_equal(scan_codes("Returns: 0; -EAGAIN if full; -EINVAL.", count_hit, NULL), 2);
	assert_int_equal(scan_codes("(-EPIPE) or -E2BIG,", count_hit, NULL), 2);
	assert_int_equal(scan_codes("non-EMPTY x-EINVAL -Ex -E -E_FOO -EINVALx", count_hit, NULL), 0);
	assert_int_equal(scan_hits, 4);
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		QT_TEST(test_scanner), QT_TEST(test_strerror_success), QT_TEST(test_strerror_known_codes),
		QT_TEST(test_strerror_fits_places), QT_TEST(test_strerror_unknown),
		QT_TEST(test_documented_codes_known), QT_TEST(test_named_codes_documented_in_err_h),
		QT_TEST(test_header_list_complete),
		QT_TEST(test_strerror_int_min), /* last: UBSan halts on it */
	};

	g_argc = argc;
	g_argv = argv;
	return cmocka_run_group_tests_name("err", tests, NULL, NULL);
}
