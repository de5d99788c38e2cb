/* SPDX-License-Identifier: MIT */
/*
 * Tests of the quay-wal command-line tool (tools/quay-wal.c), run as a
 * program: argv[1] is the path of the built tool. Each test makes a log
 * with the public API in a fresh directory, damages it (or not), runs the
 * tool on it and checks the exit status, the output and that the
 * directory was not changed.
 *
 * Cases: --help/--version; usage errors (table); missing, non-directory,
 * empty and foreign directories; an unreadable segment; a sound log
 * (verify, dump text/JSON with --from/--limit/--preview, stats text/JSON);
 * a torn tail; mid-log corruption (with and without --salvage); a junk
 * segment file; a durable queue's log (the queue-record decoder: live
 * messages per queue in stats and dump, text and JSON). Every JSON line
 * is checked by a small JSON parser.
 */
#include "quay_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <quay/msg.h>
#include <quay/pool.h>
#include <quay/queue.h>
#include <quay/version.h>
#include <quay/wal.h>

static const char *tool;

/* ---- fixture: a directory with a known log ------------------------- */

#define NREC 400
#define TYPE_BIN 7u
#define TYPE_BIG 8u
#define TYPE_TAIL 9u
#define BIG_LEN 2000u

struct tc {
	char root[256]; /* the temporary directory */
	char log[300];  /* root/log */
	char out_path[300], err_path[300];
	char *out, *err; /* output of the last run */
	int status;      /* exit status of the last run */
	/* what the log holds */
	uint64_t records, last_lsn, checkpoint_lsn, segments;
	uint64_t type_count[10], type_bytes[10];
};

/* The payload with quotes, a backslash, a newline and bytes that are
 * neither ASCII nor valid UTF-8. */
static const unsigned char bin_payload[] = { 'a', '"', 'b', '\\', 'c', '\n', 0x01, 0xff, 0x00, 'z' };

static void
add(struct tc *t, quay_wal *w, uint32_t type, const void *data, size_t len)
{
	uint64_t lsn;

	assert_int_equal(quay_wal_append(w, type, data, len, &lsn), 0);
	t->records++;
	t->type_count[type]++;
	t->type_bytes[type] += len;
	t->last_lsn = lsn;
}

static void
make_log(struct tc *t, const char *dir)
{
	struct quay_wal_opts o = QUAY_WAL_OPTS_INIT;
	struct quay_wal_info info;
	quay_wal *w;
	char buf[BIG_LEN];

	o.sync_mode = QUAY_WAL_NONE;
	o.segment_bytes = QUAY_WAL_SEGMENT_MIN;
	assert_int_equal(quay_wal_open(dir, &o, &w), 0);
	for (int i = 0; i < NREC; i++) {
		if (i == 5) {
			add(t, w, TYPE_BIN, bin_payload, sizeof(bin_payload));
		} else if (i == 10) {
			memset(buf, 'B', BIG_LEN);
			add(t, w, TYPE_BIG, buf, BIG_LEN);
		} else if (i == 20) {
			add(t, w, 1, NULL, 0); /* an empty record */
		} else {
			int n = snprintf(buf, sizeof(buf), "rec-%05d-", i);
			size_t len = (size_t)n + (size_t)(i * 37 % 300);
			memset(buf + n, 'a' + i % 26, len - (size_t)n);
			add(t, w, 1 + (uint32_t)(i % 3), buf, len);
		}
		if (i == 50) {
			/* A batch of three, and a checkpoint mark (WAL-internal). */
			quay_wal_rec recs[3] = { { 4, "b1", 2 }, { 4, "b2", 2 }, { 5, "b3", 2 } };
			uint64_t last;
			assert_int_equal(quay_wal_appendv(w, recs, 3, &last), 0);
			t->records += 3;
			t->type_count[4] += 2;
			t->type_count[5] += 1;
			t->type_bytes[4] += 4;
			t->type_bytes[5] += 2;
			assert_int_equal(quay_wal_checkpoint(w, 3), 0);
			t->checkpoint_lsn = 3;
		}
	}
	memset(buf, 'T', 100);
	memcpy(buf, "TAILMARK", 8);
	add(t, w, TYPE_TAIL, buf, 100);
	assert_int_equal(quay_wal_info(w, &info), 0);
	t->segments = info.segments;
	t->last_lsn = info.last_lsn;
	assert_true(t->segments >= 2);
	assert_int_equal(quay_wal_close(w), 0);
}

static int
rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
setup(void **state)
{
	struct tc *t = calloc(1, sizeof(*t));
	const char *tmp = getenv("TMPDIR");

	if (t == NULL)
		return -1;
	snprintf(t->root, sizeof(t->root), "%s/quay-wal-test.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
	if (mkdtemp(t->root) == NULL)
		return -1;
	snprintf(t->log, sizeof(t->log), "%s/log", t->root);
	snprintf(t->out_path, sizeof(t->out_path), "%s/out", t->root);
	snprintf(t->err_path, sizeof(t->err_path), "%s/err", t->root);
	make_log(t, t->log);
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct tc *t = *state;

	nftw(t->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(t->out);
	free(t->err);
	free(t);
	return 0;
}

/* ---- running the tool ------------------------------------------------ */

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	size_t n = 0, cap = 0, r;

	assert_non_null(f);
	do {
		if (cap - n < 4097) {
			cap = cap ? 2 * cap : 8192;
			b = realloc(b, cap);
			assert_non_null(b);
		}
		r = fread(b + n, 1, cap - n - 1, f);
		n += r;
	} while (r > 0);
	b[n] = '\0';
	fclose(f);
	return b;
}

/* Run the tool with the given arguments (NULL-terminated); fills
 * t->status, t->out, t->err. */
static int
run_argv(struct tc *t, char *const argv[])
{
	pid_t pid;
	int st;

	fflush(stdout);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int o = open(t->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int e = open(t->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(126);
		execv(tool, argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		assert_int_equal(errno, EINTR);
	free(t->out);
	free(t->err);
	t->out = slurp(t->out_path);
	t->err = slurp(t->err_path);
	t->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	return t->status;
}

#define MAXARG 16

static int
run(struct tc *t, ...)
{
	char *argv[MAXARG + 2];
	va_list ap;
	int n = 0;
	const char *a;

	argv[n++] = (char *)tool;
	va_start(ap, t);
	while ((a = va_arg(ap, const char *)) != NULL && n <= MAXARG)
		argv[n++] = (char *)a;
	va_end(ap);
	argv[n] = NULL;
	return run_argv(t, argv);
}

static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

#define assert_has(hay, needle) \
	do { \
		if (strstr((hay), (needle)) == NULL) \
			fail_msg("expected \"%s\" in:\n%s", (needle), (hay)); \
	} while (0)

/* ---- a directory's contents, to prove the tool changed nothing ------- */

static uint64_t snap_hash;

static int
snap_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	/* the tool's captured output is not part of what it may not change */
	if (ftw->level == 1 && (strcmp(path + ftw->base, "out") == 0 || strcmp(path + ftw->base, "err") == 0))
		return 0;
	for (const char *p = path; *p; p++)
		snap_hash = (snap_hash ^ (unsigned char)*p) * UINT64_C(1099511628211);
	snap_hash = (snap_hash ^ (uint64_t)sb->st_size) * UINT64_C(1099511628211);
	snap_hash = (snap_hash ^ (uint64_t)sb->st_mode) * UINT64_C(1099511628211);
	if (flag == FTW_F) {
		FILE *f = fopen(path, "rb");
		int c;
		if (f == NULL)
			return 0;
		while ((c = getc(f)) != EOF)
			snap_hash = (snap_hash ^ (unsigned)c) * UINT64_C(1099511628211);
		fclose(f);
	}
	return 0;
}

static uint64_t
snapshot(const char *dir)
{
	snap_hash = UINT64_C(14695981039346656037);
	nftw(dir, snap_cb, 16, FTW_PHYS);
	return snap_hash;
}

/* ---- a small JSON parser (validation only) --------------------------- */

static const char *json_value(const char *p, int depth);

static const char *
json_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

static const char *
json_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	for (;;) {
		unsigned char c = (unsigned char)*p++;
		if (c == '"')
			return p;
		if (c < 0x20)
			return NULL; /* control bytes (and the NUL at the end) */
		if (c == '\\') {
			c = (unsigned char)*p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++, p++)
					if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
					        (*p >= 'A' && *p <= 'F')))
						return NULL;
			} else if (strchr("\"\\/bfnrt", (int)c) == NULL || c == 0) {
				return NULL;
			}
		} else if (c >= 0x80) {
			return NULL; /* the tool promises ASCII output */
		}
	}
}

static const char *
json_number(const char *p)
{
	const char *s;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return NULL;
	if (*p == '.') {
		s = ++p;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p == s)
			return NULL;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		s = p;
		while (*p >= '0' && *p <= '9')
			p++;
		if (p == s)
			return NULL;
	}
	return p;
}

static const char *
json_value(const char *p, int depth)
{
	if (depth > 32 || p == NULL)
		return NULL;
	p = json_ws(p);
	if (*p == '{' || *p == '[') {
		char close = *p == '{' ? '}' : ']';
		bool obj = *p == '{';
		p = json_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (obj) {
				p = json_string(json_ws(p));
				if (p == NULL || *(p = json_ws(p)) != ':')
					return NULL;
				p++;
			}
			p = json_value(p, depth + 1);
			if (p == NULL)
				return NULL;
			p = json_ws(p);
			if (*p == close)
				return p + 1;
			if (*p != ',')
				return NULL;
			p++;
		}
	}
	if (*p == '"')
		return json_string(p);
	if (strncmp(p, "true", 4) == 0)
		return p + 4;
	if (strncmp(p, "false", 5) == 0)
		return p + 5;
	if (strncmp(p, "null", 4) == 0)
		return p + 4;
	return json_number(p);
}

/* Every line of s is one valid JSON object. Returns the number of lines. */
static size_t
check_json_lines(const char *s)
{
	size_t n = 0;

	while (*s) {
		const char *e;
		if (*json_ws(s) != '{')
			fail_msg("not a JSON object: %.200s", s);
		e = json_value(s, 0);
		if (e == NULL || *(e = json_ws(e)) != '\n')
			fail_msg("invalid JSON line: %.300s", s);
		s = e + 1;
		n++;
	}
	return n;
}

/* A number after `"key":` in a JSON text (first occurrence). */
static uint64_t
json_u64(const char *s, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(s, k);
	if (p == NULL)
		fail_msg("no key %s in %.300s", key, s);
	return strtoull(p + strlen(k), NULL, 10);
}

/* ---- tests ----------------------------------------------------------- */

static void
help_and_version(void **state)
{
	struct tc *t = *state;

	assert_int_equal(run(t, "--help", NULL), 0);
	assert_has(t->out, "Usage: quay-wal");
	assert_has(t->out, "verify DIR");
	assert_has(t->out, "dump DIR");
	assert_has(t->out, "stats DIR");
	assert_int_equal(run(t, "-h", NULL), 0);
	assert_has(t->out, "Usage:");
	assert_int_equal(run(t, "dump", "--help", NULL), 0);
	assert_has(t->out, "--limit");
	assert_int_equal(run(t, "--version", NULL), 0);
	assert_has(t->out, "quay-wal " QUAY_VERSION_STRING);
	assert_int_equal(run(t, "-V", NULL), 0);
	assert_has(t->out, QUAY_VERSION_STRING);
}

/* Usage errors: exit 2, a message on stderr, nothing on stdout, and the
 * directory untouched. */
static void
usage_errors(void **state)
{
	struct tc *t = *state;
	const char *L = t->log;
	const char *cases[][8] = {
		{ NULL },
		{ "frobnicate", L, NULL },
		{ "verify", NULL },
		{ "verify", L, L, NULL },
		{ "verify", L, "--json", NULL },
		{ "verify", "--bogus", L, NULL },
		{ "dump", NULL },
		{ "dump", L, "--limit", "0", NULL },
		{ "dump", L, "--limit", "abc", NULL },
		{ "dump", L, "--limit", NULL },
		{ "dump", L, "--limit", "5", "--limit", "6", NULL },
		{ "dump", L, "--from", "-1", NULL },
		{ "dump", L, "--from", "18446744073709551616", NULL },
		{ "dump", L, "--from=", NULL },
		{ "dump", L, "--preview", "4097", NULL },
		{ "dump", L, "--fromage", "1", NULL },
		{ "stats", L, "--limit", "1", NULL },
		{ "stats", "", NULL },
	};
	uint64_t before = snapshot(t->root);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[10] = { (char *)tool };
		for (int j = 0; cases[i][j] != NULL; j++)
			argv[j + 1] = (char *)cases[i][j];
		run_argv(t, argv);
		if (t->status != 2 || t->err[0] == '\0' || t->out[0] != '\0')
			fail_msg("case %zu (%s %s): status %d, stderr \"%s\", stdout \"%.100s\"", i,
			    cases[i][0] ? cases[i][0] : "(none)",
			    cases[i][0] && cases[i][1] ? cases[i][1] : "", t->status, t->err, t->out);
	}
	/* --from=N and "--" are accepted. */
	assert_int_equal(run(t, "dump", "--from=2", "--limit=1", "--", L, NULL), 0);
	assert_int_equal(count_lines(t->out), 1);
	assert_int_equal(snapshot(t->root), before);
}

/* A directory that is missing, a file, empty, or holds no segment: exit
 * 2 with a clear message, for every command. */
static void
bad_directories(void **state)
{
	struct tc *t = *state;
	char missing[400], file[400], empty[400], foreign[400], path[500];
	const char *cmds[] = { "verify", "dump", "stats" };

	snprintf(missing, sizeof(missing), "%s/nope", t->root);
	snprintf(file, sizeof(file), "%s/afile", t->root);
	snprintf(empty, sizeof(empty), "%s/empty", t->root);
	snprintf(foreign, sizeof(foreign), "%s/foreign", t->root);
	FILE *f = fopen(file, "w");
	assert_non_null(f);
	fputs("hello\n", f);
	fclose(f);
	assert_int_equal(mkdir(empty, 0755), 0);
	assert_int_equal(mkdir(foreign, 0755), 0);
	snprintf(path, sizeof(path), "%s/notes.txt", foreign);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/1.wal", foreign); /* not a segment name */
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	uint64_t before = snapshot(t->root);

	for (size_t c = 0; c < 3; c++) {
		assert_int_equal(run(t, cmds[c], missing, NULL), 2);
		assert_has(t->err, "nope");
		assert_has(t->err, "No such file or directory");
		assert_int_equal(run(t, cmds[c], file, NULL), 2);
		assert_has(t->err, "not a directory");
		assert_int_equal(run(t, cmds[c], empty, NULL), 2);
		assert_has(t->err, "not a WAL");
		assert_int_equal(run(t, cmds[c], foreign, NULL), 2);
		assert_has(t->err, "not a WAL");
		assert_string_equal(t->out, "");
	}
	assert_int_equal(snapshot(t->root), before);
}

/* A segment that cannot be read (a directory with a segment's name):
 * exit 2, naming the file. */
static void
unreadable_segment(void **state)
{
	struct tc *t = *state;
	char dir[400], seg[500];

	snprintf(dir, sizeof(dir), "%s/unreadable", t->root);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(seg, sizeof(seg), "%s/0000000000000001.wal", dir);
	assert_int_equal(mkdir(seg, 0755), 0);
	assert_int_equal(run(t, "verify", dir, NULL), 2);
	assert_has(t->err, "0000000000000001.wal");
	assert_has(t->err, "could not be read");
}

static void
verify_sound(void **state)
{
	struct tc *t = *state;
	char want[200];
	uint64_t before = snapshot(t->root);

	assert_int_equal(run(t, "verify", t->log, NULL), 0);
	assert_has(t->out, "OK:");
	snprintf(want, sizeof(want), "%" PRIu64 " segment(s), %" PRIu64 " record(s)", t->segments,
	    t->records);
	assert_has(t->out, want);
	snprintf(want, sizeof(want), "LSN 1..%" PRIu64, t->last_lsn);
	assert_has(t->out, want);
	assert_string_equal(t->err, "");
	assert_int_equal(snapshot(t->root), before);
}

static void
dump_text(void **state)
{
	struct tc *t = *state;
	uint64_t before = snapshot(t->root);

	assert_int_equal(run(t, "dump", t->log, NULL), 0);
	assert_int_equal(count_lines(t->out), t->records);
	/* record types in hex, as the docs write them (issue 11) */
	assert_has(t->out, "lsn=1 type=0x00000001 len=");
	assert_has(t->out, "data=\"rec-00000-");
	/* escaping of quotes, backslash, newline, control and high bytes */
	assert_has(t->out, "type=0x00000007 len=10 data=\"a\\\"b\\\\c\\n\\x01\\xff\\0z\"\n");
	/* a long payload is cut at the preview size and marked */
	assert_has(t->out, "type=0x00000008 len=2000 data=\"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\"...\n");
	assert_has(t->out, "len=0 data=\"\"\n");
	/* LSNs strictly increase */
	uint64_t prev = 0;
	for (const char *p = t->out; (p = strstr(p, "lsn=")) != NULL; p++) {
		uint64_t l = strtoull(p + 4, NULL, 10);
		assert_true(l > prev);
		prev = l;
	}
	assert_int_equal(prev, t->last_lsn);

	/* --from, --limit, --preview */
	assert_int_equal(run(t, "dump", t->log, "--from", "10", "--limit", "3", NULL), 0);
	assert_int_equal(count_lines(t->out), 3);
	assert_true(strncmp(t->out, "lsn=10 ", 7) == 0);
	assert_int_equal(run(t, "dump", "--preview", "4", t->log, "--limit", "1", NULL), 0);
	assert_has(t->out, "data=\"rec-\"...\n");
	assert_int_equal(run(t, "dump", t->log, "--preview", "0", "--limit", "1", NULL), 0);
	assert_has(t->out, "data=\"\"...\n");
	/* past the end: nothing, still success */
	assert_int_equal(run(t, "dump", t->log, "--from", "999999", NULL), 0);
	assert_string_equal(t->out, "");
	assert_int_equal(snapshot(t->root), before);
}

static void
dump_json(void **state)
{
	struct tc *t = *state;

	assert_int_equal(run(t, "dump", t->log, "--json", NULL), 0);
	assert_int_equal(check_json_lines(t->out), t->records);
	assert_has(t->out, "{\"lsn\":1,\"type\":1,\"type_hex\":\"0x00000001\",\"len\":");
	assert_has(t->out,
	    "\"type\":7,\"type_hex\":\"0x00000007\",\"len\":10,\"preview\":\"a\\\"b\\\\c\\n\\u0001\\u00ff\\u0000z\","
	    "\"preview_hex\":\"6122625c630a01ff007a\",\"truncated\":false}");
	assert_has(t->out, "\"type\":8,\"type_hex\":\"0x00000008\",\"len\":2000,");
	assert_has(t->out, "\"truncated\":true}");
	assert_int_equal(run(t, "dump", t->log, "--json", "--from", "100", "--limit", "5", "--preview",
	                     "4096", NULL),
	    0);
	assert_int_equal(check_json_lines(t->out), 5);
	assert_int_equal(json_u64(t->out, "lsn"), 100);
}

static void
stats_text_and_json(void **state)
{
	struct tc *t = *state;
	char want[300];
	uint64_t before = snapshot(t->root);

	assert_int_equal(run(t, "stats", t->log, NULL), 0);
	assert_has(t->out, "state:            sound\n");
	snprintf(want, sizeof(want), "segments:         %" PRIu64 "\n", t->segments);
	assert_has(t->out, want);
	/* the checkpoint mark is the one WAL-internal record */
	snprintf(want, sizeof(want), "records:          %" PRIu64 " (+ 1 WAL-internal)\n", t->records);
	assert_has(t->out, want);
	snprintf(want, sizeof(want), "LSN:              1..%" PRIu64 "\n", t->last_lsn);
	assert_has(t->out, want);
	assert_has(t->out, "checkpoint LSN:   3\n");
	assert_has(t->out, "types:            8\n"); /* 1..5, 7, 8, 9 */
	assert_has(t->out, "live messages:    unknown");
	for (uint32_t ty = 1; ty <= 9; ty++) {
		if (t->type_count[ty] == 0)
			continue;
		snprintf(want, sizeof(want),
		    "  type 0x%08" PRIx32 " %-12s %12" PRIu64 " record(s) %14" PRIu64 " payload bytes", ty,
		    "", t->type_count[ty], t->type_bytes[ty]);
		assert_has(t->out, want);
	}

	assert_int_equal(run(t, "stats", "--json", t->log, NULL), 0);
	assert_int_equal(check_json_lines(t->out), 1);
	assert_has(t->out, "\"state\":\"sound\"");
	assert_int_equal(json_u64(t->out, "segments"), t->segments);
	assert_int_equal(json_u64(t->out, "records"), t->records);
	assert_int_equal(json_u64(t->out, "wal_internal_records"), 1);
	assert_int_equal(json_u64(t->out, "first_lsn"), 1);
	assert_int_equal(json_u64(t->out, "last_lsn"), t->last_lsn);
	assert_int_equal(json_u64(t->out, "checkpoint_lsn"), 3);
	assert_true(json_u64(t->out, "file_bytes") >= json_u64(t->out, "bytes"));
	snprintf(want, sizeof(want),
	    "{\"type\":7,\"type_hex\":\"0x00000007\",\"records\":1,\"payload_bytes\":10,\"log_bytes\":48}");
	assert_has(t->out, want);
	assert_true(strstr(t->out, "live") == NULL); /* never a made-up figure */
	assert_int_equal(snapshot(t->root), before);
}

static int
cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Find a marker in the segment files of dir: fills path and offset. */
static void
find_marker(const char *dir, const char *marker, bool last_seg, char *path, size_t pathsz, long *off)
{
	char names[16][64];
	int n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL && n < 16)
		if (strlen(e->d_name) == 20 && strcmp(e->d_name + 16, ".wal") == 0)
			snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
	closedir(d);
	assert_true(n >= 2);
	qsort(names, (size_t)n, sizeof(names[0]), cmp_name);
	snprintf(path, pathsz, "%s/%s", dir, last_seg ? names[n - 1] : names[0]);
	char *buf = slurp(path); /* binary: only memmem is used */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	char *p = memmem(buf, (size_t)st.st_size, marker, strlen(marker));
	assert_non_null(p);
	*off = (long)(p - buf);
	free(buf);
}

static void
poke(const char *path, long off, unsigned char x)
{
	int fd = open(path, O_RDWR);
	unsigned char c;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= x;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

/* Damage in the last record of the last segment: a torn tail. verify
 * says so (exit 1, recoverable, where and what would be cut); dump and
 * stats show the records before it. */
static void
torn_tail(void **state)
{
	struct tc *t = *state;
	char path[512], want[600];
	long off;

	find_marker(t->log, "TAILMARK", true, path, sizeof(path), &off);
	poke(path, off + 50, 0x40);
	uint64_t before = snapshot(t->root);

	assert_int_equal(run(t, "verify", t->log, NULL), 1);
	assert_has(t->out, "TORN TAIL");
	snprintf(want, sizeof(want), "%s, byte offset %ld ", path, off - 32);
	assert_has(t->out, want);
	assert_has(t->out, "record checksum mismatch");
	assert_has(t->out, "recoverable");
	assert_has(t->out, "cuts 132 byte(s)"); /* 32 + 100, up to the last non-zero byte */
	/* The cut record may have been acknowledged (a synced record damaged
	 * later looks the same): never claim otherwise (issue 11). */
	assert_null(strstr(t->out, "acknowledged in SYNC mode is lost"));
	assert_has(t->out, "every record before the cut is intact and kept");
	assert_has(t->out, "cannot be told from the log");
	snprintf(want, sizeof(want), "%" PRIu64 " record(s), LSN 1..%" PRIu64, t->records - 1,
	    t->last_lsn - 1);
	assert_has(t->out, want);

	assert_int_equal(run(t, "dump", t->log, NULL), 0);
	assert_int_equal(count_lines(t->out), t->records - 1);
	assert_has(t->err, "torn tail");
	assert_int_equal(run(t, "stats", t->log, "--json", NULL), 0);
	assert_int_equal(check_json_lines(t->out), 1);
	assert_has(t->out, "\"state\":\"torn-tail\"");
	assert_has(t->out, "\"reason\":\"record checksum mismatch\"");
	assert_int_equal(json_u64(t->out, "records"), t->records - 1);
	assert_int_equal(json_u64(t->out, "offset"), (uint64_t)(off - 32));
	/* read-only: the tail is still there */
	assert_int_equal(snapshot(t->root), before);
	assert_int_equal(run(t, "verify", t->log, NULL), 1);
}

/* Damage in a sealed segment: corruption (exit 1), not a torn tail. */
static void
mid_log_corruption(void **state)
{
	struct tc *t = *state;
	char path[512], want[600];
	long off;

	find_marker(t->log, "rec-00030-", false, path, sizeof(path), &off);
	poke(path, off + 12, 0x01);
	uint64_t before = snapshot(t->root);

	assert_int_equal(run(t, "verify", t->log, NULL), 1);
	assert_has(t->err, "CORRUPT");
	snprintf(want, sizeof(want), "%s, byte offset %ld ", path, off - 32);
	assert_has(t->err, want);
	assert_has(t->err, "record checksum mismatch");
	assert_has(t->err, "not a torn tail");
	assert_true(strstr(t->out, "TORN") == NULL);

	assert_int_equal(run(t, "dump", t->log, NULL), 1);
	assert_has(t->err, "CORRUPT");
	assert_string_equal(t->out, "");
	assert_int_equal(run(t, "stats", t->log, NULL), 1);
	assert_has(t->err, "CORRUPT");

	/* --salvage: the valid prefix, LSN 1..30 (records 0..29 are LSN 1..30
	 * since the batch and the checkpoint come after record 50) */
	assert_int_equal(run(t, "dump", t->log, "--salvage", NULL), 0);
	assert_int_equal(count_lines(t->out), 30);
	assert_has(t->err, "CORRUPT (salvaged)");
	assert_int_equal(run(t, "stats", t->log, "--salvage", "--json", NULL), 0);
	assert_int_equal(check_json_lines(t->out), 1);
	assert_has(t->out, "\"state\":\"corrupt-salvaged\"");
	assert_int_equal(json_u64(t->out, "records"), 30);
	assert_int_equal(snapshot(t->root), before);
}

/* A file with a segment's name but junk inside: a damaged log. */
static void
junk_segment(void **state)
{
	struct tc *t = *state;
	char dir[400], seg[500];

	snprintf(dir, sizeof(dir), "%s/junk", t->root);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(seg, sizeof(seg), "%s/0000000000000001.wal", dir);
	FILE *f = fopen(seg, "w");
	assert_non_null(f);
	for (int i = 0; i < 200; i++)
		fputs("this is not a write-ahead log ", f);
	fclose(f);
	assert_int_equal(run(t, "verify", dir, NULL), 1);
	assert_has(t->err, "0000000000000001.wal, byte offset 0 ");
	assert_has(t->err, "header");
}

/* ---- a durable queue's log ------------------------------------------ */

#define DQ_N 20    /* messages sent to "jobs" */
#define DQ_ACKED 3 /* of them acked */
#define DQ_MAXLIVE 64

/* The queue id of the records: FNV-1a 64 of the queue's name
 * (src/queue_durable.c, RECORD FORMAT). */
static uint64_t
dq_qid(const char *name)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * UINT64_C(0x100000001b3);
	return h;
}

/* The live set rebuilt from dump lines: ADD puts (queue, did) in (did 0:
 * the record's LSN), DEL takes it out. */
struct dq_set {
	uint64_t q[DQ_MAXLIVE], did[DQ_MAXLIVE];
	size_t n;
	uint64_t adds, dels, acks, dl_dels, dl_adds;
};

static void
dq_apply(struct dq_set *s, bool add, uint64_t q, uint64_t did)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (s->q[i] == q && s->did[i] == did)
			break;
	if (add) {
		s->adds++;
		if (i == s->n) {
			assert_true(s->n < DQ_MAXLIVE);
			s->q[s->n] = q;
			s->did[s->n++] = did;
		}
	} else {
		s->dels++;
		assert_true(i < s->n); /* a DEL of something live */
		s->q[i] = s->q[--s->n];
		s->did[i] = s->did[s->n];
	}
}

static size_t
dq_count(const struct dq_set *s, uint64_t q)
{
	size_t c = 0;

	for (size_t i = 0; i < s->n; i++)
		c += s->q[i] == q;
	return c;
}

/* Parse `dump` output (text or JSON lines) into *s. */
static void
dq_parse_dump(const char *out, bool json, struct dq_set *s)
{
	memset(s, 0, sizeof(*s));
	for (const char *l = out; *l != '\0';) {
		const char *e = strchr(l, '\n'), *p;
		char line[4096];
		uint64_t lsn, q, did;
		bool add, del;

		assert_non_null(e);
		assert_true((size_t)(e - l) < sizeof(line));
		memcpy(line, l, (size_t)(e - l));
		line[e - l] = '\0';
		l = e + 1;
		if (json) {
			add = strstr(line, "\"type_name\":\"queue-add\"") != NULL;
			del = strstr(line, "\"type_name\":\"queue-del\"") != NULL;
			if (!add && !del)
				continue;
			lsn = json_u64(line, "lsn");
			p = strstr(line, "\"decoded\":{\"queue\":\"");
			assert_non_null(p);
			/* names resolved (issue 11) */
			assert_non_null(strstr(p, "\"queue_name\":\"jobs"));
			q = strtoull(p + strlen("\"decoded\":{\"queue\":\""), NULL, 16);
			did = json_u64(p, "did");
			if (del && strstr(p, "\"why\":\"ack\"") != NULL)
				s->acks++;
			if (del && strstr(p, "\"why\":\"dead-letter\"") != NULL)
				s->dl_dels++;
			if (add && strstr(p, "\"origin\":\"dead-letter\"") != NULL)
				s->dl_adds++;
		} else {
			add = strstr(line, "(queue-add)") != NULL;
			del = strstr(line, "(queue-del)") != NULL;
			if (!add && !del)
				continue;
			assert_int_equal(strncmp(line, "lsn=", 4), 0);
			lsn = strtoull(line + 4, NULL, 10);
			/* The decoded part follows the data preview: the last
			 * " queue " of the line. */
			p = NULL;
			for (const char *x = strstr(line, " queue "); x != NULL; x = strstr(x + 1, " queue "))
				p = x;
			assert_non_null(p);
			/* "queue NAME [ID]": the name the log gives (issue 11) */
			assert_true(
			    strncmp(p, " queue jobs [", 13) == 0 || strncmp(p, " queue jobs-dlq [", 17) == 0);
			q = strtoull(strchr(p, '[') + 1, NULL, 16);
			p = strstr(p, " did ");
			assert_non_null(p);
			did = strtoull(p + 5, NULL, 10);
			if (del && strstr(p, " ack") != NULL)
				s->acks++;
			if (del && strstr(p, " dead-letter") != NULL)
				s->dl_dels++;
			if (add && strstr(p, " dead-letter ") != NULL)
				s->dl_adds++;
		}
		dq_apply(s, add, q, add && did == 0 ? lsn : did);
	}
}

static void
durable_queue(void **state)
{
	struct tc *t = *state;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_pool *pool;
	quay_wal *w;
	quay_queue *jobs, *dlq;
	quay_lease l;
	struct dq_set s;
	char dir[300], want[200];
	const uint64_t qj = dq_qid("jobs"), qd = dq_qid("jobs-dlq");
	const uint64_t live_jobs = DQ_N - DQ_ACKED - 1, live_dlq = 1; /* one in flight stays live */
	uint64_t before;

	snprintf(dir, sizeof(dir), "%s/dq", t->root);
	assert_int_equal(quay_pool_create((size_t)1 << 20, NULL, &pool), 0);
	wo.sync_mode = QUAY_WAL_NONE; /* close writes and syncs it all */
	assert_int_equal(quay_wal_open(dir, &wo, &w), 0);
	o.wal = w;
	o.pool = pool;
	o.name = "jobs-dlq";
	assert_int_equal(quay_queue_create(&o, &dlq), 0);
	o.name = "jobs";
	o.dlq = dlq;
	o.max_attempts = 1;
	assert_int_equal(quay_queue_create(&o, &jobs), 0);
	for (uint32_t i = 0; i < DQ_N; i++) {
		quay_msg *m;
		assert_int_equal(quay_msg_new(pool, &i, sizeof(i), &m), 0);
		assert_int_equal(quay_queue_send(jobs, m), 0);
	}
	for (int i = 0; i < DQ_ACKED + 2; i++) {
		assert_int_equal(quay_queue_receive(jobs, &l, 0), 0);
		if (i < DQ_ACKED)
			assert_int_equal(quay_queue_ack(jobs, &l), 0);
		else if (i == DQ_ACKED)
			assert_int_equal(quay_queue_nack(jobs, &l, "bad"), 0); /* max_attempts 1: DLQ */
		/* the last one stays in flight; each delivery's count was
		 * logged before its lease (a RETRY record, issue 13) */
		quay_msg_unref(l.msg);
	}
	quay_queue_destroy(jobs);
	quay_queue_destroy(dlq);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(quay_pool_destroy(pool), 0);
	before = snapshot(t->root);

	/* stats, text: the live figure and both queue-record types. */
	assert_int_equal(run(t, "stats", dir, NULL), 0);
	assert_has(t->out, "state:            sound\n");
	snprintf(want, sizeof(want), "live messages:    %" PRIu64 " (", live_jobs + live_dlq);
	assert_has(t->out, want);
	assert_has(t->out, " bytes of records) in 2 queue(s)\n");
	assert_has(t->out, " queue-add ");
	assert_has(t->out, " queue-del ");
	/* per queue, by name (issue 11); types in hex */
	snprintf(want, sizeof(want), "  jobs: %" PRIu64 " live\n", live_jobs);
	assert_has(t->out, want);
	assert_has(t->out, "  jobs-dlq: 1 live\n");
	assert_has(t->out, "  type 0x51440001 queue-add ");
	assert_has(t->out, "  type 0x51440004 queue-name ");

	/* stats, JSON: one valid line with the same figures. */
	assert_int_equal(run(t, "stats", "--json", dir, NULL), 0);
	assert_int_equal(check_json_lines(t->out), 1);
	assert_int_equal(json_u64(t->out, "live_messages"), live_jobs + live_dlq);
	assert_int_equal(json_u64(t->out, "live_queues"), 2);
	assert_true(json_u64(t->out, "live_message_bytes") >= (live_jobs + live_dlq) * 72);
	uint64_t records = json_u64(t->out, "records");
	/* sends + the dead letter's ADD; acks + its DEL; one NAME a queue;
	 * one RETRY per delivery */
	assert_int_equal(records, DQ_N + 1 + DQ_ACKED + 1 + 2 + DQ_ACKED + 2);
	assert_has(t->out, "\"name\":\"queue-add\",\"records\":21,");
	assert_has(t->out, "\"name\":\"queue-del\",\"records\":4,");
	assert_has(t->out, "\"name\":\"queue-retry\",\"records\":5,");
	assert_has(t->out,
	    "\"type\":1363410948,\"type_hex\":\"0x51440004\",\"name\":\"queue-name\",\"records\":2,");
	snprintf(want, sizeof(want), "\"queue_name\":\"jobs\",\"live\":%" PRIu64 "}", live_jobs);
	assert_has(t->out, want);
	assert_has(t->out, "\"queue_name\":\"jobs-dlq\",\"live\":1}");

	/* dump, JSON and text: rebuilt per queue, the same live sets. */
	assert_int_equal(run(t, "dump", dir, "--json", NULL), 0);
	assert_int_equal(check_json_lines(t->out), records);
	dq_parse_dump(t->out, true, &s);
	assert_int_equal(s.adds, DQ_N + 1);
	assert_int_equal(s.dels, DQ_ACKED + 1);
	assert_int_equal(s.acks, DQ_ACKED);
	assert_int_equal(s.dl_dels, 1);
	assert_int_equal(s.dl_adds, 1);
	assert_int_equal(dq_count(&s, qj), live_jobs);
	assert_int_equal(dq_count(&s, qd), live_dlq);
	assert_int_equal(s.n, live_jobs + live_dlq);

	assert_int_equal(run(t, "dump", dir, NULL), 0);
	assert_int_equal(count_lines(t->out), records);
	/* the durable id resolved, the body shown, the name records */
	assert_has(t->out, "type=0x51440004(queue-name) len=20 data=");
	assert_has(t->out, " is named \"jobs\"\n");
	assert_has(t->out, " (its LSN) send attempts 0 ");
	assert_has(t->out, " body 4 body=\"\\0\\0\\0\\0\"\n");   /* message 0: u32 0 */
	assert_has(t->out, " body 4 body=\"\\x01\\0\\0\\0\"\n"); /* message 1 */
	dq_parse_dump(t->out, false, &s);
	assert_int_equal(s.adds, DQ_N + 1);
	assert_int_equal(s.dels, DQ_ACKED + 1);
	assert_int_equal(s.acks, DQ_ACKED);
	assert_int_equal(s.dl_dels, 1);
	assert_int_equal(s.dl_adds, 1);
	assert_int_equal(dq_count(&s, qj), live_jobs);
	assert_int_equal(dq_count(&s, qd), live_dlq);
	assert_int_equal(snapshot(t->root), before); /* read only */
}

/* A log written before NAME records existed (issue 11): ADD and DEL
 * records only. Still read: queues shown by their id, counted right. */
static void
durable_queue_old_log(void **state)
{
	struct tc *t = *state;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	quay_wal *w;
	char dir[300], want[200];
	unsigned char add[72 + 3], del[24];
	const uint64_t q = dq_qid("legacy");
	uint64_t lsn;

	snprintf(dir, sizeof(dir), "%s/old", t->root);
	assert_int_equal(quay_wal_open(dir, &wo, &w), 0);
	for (int i = 0; i < 3; i++) { /* three sends: did 0 (own LSN), body "abc" */
		memset(add, 0, sizeof(add));
		for (int b = 0; b < 8; b++)
			add[b] = (unsigned char)(q >> (8 * b));
		add[64] = 3; /* body_len */
		memcpy(add + 72, "abc", 3);
		assert_int_equal(quay_wal_append(w, 0x51440001u, add, sizeof(add), &lsn), 0);
	}
	memset(del, 0, sizeof(del)); /* ack the last one */
	for (int b = 0; b < 8; b++) {
		del[b] = (unsigned char)(q >> (8 * b));
		del[8 + b] = (unsigned char)(lsn >> (8 * b));
	}
	del[16] = 1;
	assert_int_equal(quay_wal_append(w, 0x51440002u, del, sizeof(del), NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);

	assert_int_equal(run(t, "stats", dir, NULL), 0);
	assert_has(t->out, "live messages:    2 (");
	snprintf(want, sizeof(want), "  queue %016" PRIx64 " (not named in the log): 2 live\n", q);
	assert_has(t->out, want);
	assert_int_equal(run(t, "dump", dir, NULL), 0);
	snprintf(want, sizeof(want), "queue %016" PRIx64 " did 1 (its LSN) send ", q);
	assert_has(t->out, want);
	assert_has(t->out, " body 3 body=\"abc\"\n");
	snprintf(want, sizeof(want), "queue %016" PRIx64 " did %" PRIu64 " ack\n", q, lsn);
	assert_has(t->out, want);
	assert_int_equal(run(t, "verify", dir, NULL), 0);
}

/* DEDUP records (issue 13): a compaction writes one per live key of a
 * queue's dedup window; dump shows kind, accept time and key, stats
 * counts them and no message; a malformed one is shown as such. */
static void
durable_queue_dedup(void **state)
{
	struct tc *t = *state;
	struct quay_wal_opts wo = QUAY_WAL_OPTS_INIT;
	struct quay_queue_opts o = QUAY_QUEUE_OPTS_INIT;
	quay_pool *pool;
	quay_wal *w;
	quay_queue *q;
	quay_lease l;
	quay_msg *m;
	char dir[300], want[200];
	unsigned char bad[41] = { 0 };
	const uint64_t qid = dq_qid("dd");

	snprintf(dir, sizeof(dir), "%s/dd", t->root);
	assert_int_equal(quay_pool_create((size_t)1 << 20, NULL, &pool), 0);
	wo.sync_mode = QUAY_WAL_NONE;
	assert_int_equal(quay_wal_open(dir, &wo, &w), 0);
	o.wal = w;
	o.pool = pool;
	o.name = "dd";
	o.dedup_window_ns = (int64_t)3600 * 1000000000;
	o.compact_bytes = 1; /* compact after every call that logged */
	assert_int_equal(quay_queue_create(&o, &q), 0);
	assert_int_equal(quay_msg_new_ex(pool, "b", 1, QUAY_MSG_HEADER_ROOM(1, 32), 0, &m), 0);
	assert_int_equal(quay_msg_set_header(m, QUAY_MSG_H_DEDUP_ID, "id-1", 4), 0);
	assert_int_equal(quay_queue_send(q, m), 0);
	assert_int_equal(quay_queue_receive(q, &l, 0), 0);
	assert_int_equal(quay_queue_ack(q, &l), 0);
	quay_msg_unref(l.msg);
	quay_queue_destroy(q);
	for (int b = 0; b < 8; b++)
		bad[b] = (unsigned char)(qid >> (8 * b));
	assert_int_equal(quay_wal_append(w, 0x51440005u, bad, sizeof(bad), NULL), 0);
	/* The right length and kind, a padding byte set: recovery refuses it. */
	bad[8] = 1;
	bad[12] = 0xee;
	assert_int_equal(quay_wal_append(w, 0x51440005u, bad, 40, NULL), 0);
	assert_int_equal(quay_wal_close(w), 0);
	assert_int_equal(quay_pool_destroy(pool), 0);

	assert_int_equal(run(t, "dump", dir, NULL), 0);
	assert_has(t->out, "type=0x51440005(queue-dedup) len=40 data=");
	/* The key is XXH3-128 of the id's bytes (high, low: XXH3_128bits). */
	assert_has(t->out, " key 0872206abd9ecc64b28971197e1c75f9\n");
	snprintf(want, sizeof(want), " queue dd [%016" PRIx64 "] dedup id accepted ", qid);
	assert_has(t->out, want);
	assert_has(t->out, "type=0x51440005(queue-dedup) len=41 data=");
	assert_has(t->out, " malformed (41 bytes)\n");
	assert_has(t->out, " malformed (40 bytes)\n");
	assert_int_equal(run(t, "dump", "--json", dir, NULL), 0);
	assert_int_equal(check_json_lines(t->out) > 0, 1);
	assert_has(t->out, "\"queue_name\":\"dd\",\"kind\":\"id\",\"accepted_ns\":");
	assert_int_equal(run(t, "stats", dir, NULL), 0);
	assert_has(t->out, "live messages:    0 (");
	assert_has(t->out, "  type 0x51440005 queue-dedup ");
}

int
main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(help_and_version, setup, teardown),
		cmocka_unit_test_setup_teardown(usage_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_directories, setup, teardown),
		cmocka_unit_test_setup_teardown(unreadable_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(verify_sound, setup, teardown),
		cmocka_unit_test_setup_teardown(dump_text, setup, teardown),
		cmocka_unit_test_setup_teardown(dump_json, setup, teardown),
		cmocka_unit_test_setup_teardown(stats_text_and_json, setup, teardown),
		cmocka_unit_test_setup_teardown(torn_tail, setup, teardown),
		cmocka_unit_test_setup_teardown(mid_log_corruption, setup, teardown),
		cmocka_unit_test_setup_teardown(junk_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(durable_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(durable_queue_old_log, setup, teardown),
		cmocka_unit_test_setup_teardown(durable_queue_dedup, setup, teardown),
	};

	if (argc != 2) {
		fprintf(stderr, "usage: %s PATH-TO-quay-wal\n", argv[0]);
		return 2;
	}
	tool = argv[1];
	return cmocka_run_group_tests_name("quay-wal", tests, NULL, NULL);
}
