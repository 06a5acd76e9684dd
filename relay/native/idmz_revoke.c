/*
 * idmz_revoke: the Mosquitto 2.0 plugin (plugin API version 5) of the relay's managed brokers.
 * It binds every MQTT session to the client certificate, decides the topic ACLs the appliance
 * rendered, evicts revoked devices, and reports every refusal to a file the appliance audits.
 * (docs/adr/0057-revoke-plugin.md, docs/adr/0058-session-bound-to-certificate.md)
 *
 * 1. Binding (MOSQ_EVT_BASIC_AUTH). The rendered listener has `require_certificate true` and NO
 *    `use_identity_as_username` (Mosquitto 2.0.11 never asks a plugin about a connection on
 *    such a listener). For every CONNECT the plugin reads the certificate CN (TLS has verified
 *    the chain and the CRL), which must be an identity path ([a-z0-9_/-], no NUL), and accepts
 *    the client id only if it equals that identity or is `<identity>:<suffix>` with a suffix of
 *    [A-Za-z0-9_-]{1,64}. ':' never occurs in an identity, so no identity's client ids can be
 *    another's: no client can take over another identity's session (the broker looks the old
 *    session up only after authentication). It then sets the MQTT username to the identity,
 *    whatever the CONNECT carried. A refused CONNECT gets CONNACK 0x87 and a report.
 * 2. ACLs (MOSQ_EVT_ACL_CHECK). With `plugin_opt_rules_file` the plugin decides publish (write)
 *    and delivery (read) itself from rules `<read|write> <identity> <topic filter>`; anything
 *    not granted is denied and reported. A write rule may end with a rate cap,
 *    `write <identity> <filter> <rate> <burst>` (docs/adr/0141-publish-rate-cap-at-the-broker.md):
 *    the rule keeps a token bucket (burst tokens, refilled at rate a second by CLOCK_MONOTONIC)
 *    shared by every session of the identity, a publish it grants takes a token, and one over
 *    the cap is denied and reported as `rate_limited`. A write rule without the two fields has
 *    no cap. rate is a decimal ([0-9]+ or [0-9]+.[0-9]+, > 0, at most IDMZ_MAX_RATE), burst an
 *    integer (1 to IDMZ_MAX_BURST); a rule with anything else there is malformed, so skipped:
 *    it grants nothing. A reload keeps the level of each bucket whose rule is still there. In 2.0.11 plugins are asked before acl_file and their
 *    answer is final, so the rendered acl_file only decides when this plugin is not loaded.
 *    SUBSCRIBE is allowed as acl_file allows it: read rights are checked on every delivery.
 * 3. Revocation. The revoked file (one identity per line) is read at start, on every reload
 *    (MOSQ_EVT_RELOAD) and whenever a tick finds it changed (Mosquitto loses a SIGHUP that
 *    arrives during a reload); each listed username is kicked and refused at CONNECT and on
 *    every ACL check.
 * 4. Reports (`plugin_opt_report_file`). One line per refusal, appended:
 *      v1 <event> <access> <count> <topic_truncated> <identity> <client_id> <topic>\n
 *    Every field is escaped: bytes outside [A-Za-z0-9_./:+#$-] become %XX, an empty field is
 *    "~", so a client-chosen client id or topic can never add a field or a line. The client id
 *    is cut to 128 bytes and the topic to 1024 (then topic_truncated is 1). Repeats of one
 *    (event, access, identity) are aggregated: the first in an interval is written at once,
 *    the rest as one line with their count when the interval ends (IDMZ_REPORT_INTERVAL_NS),
 *    so a flooding client adds at most two lines a second. Counts saturate at IDMZ_MAX_COUNT.
 *
 * Options (mosquitto.conf):
 *   plugin /path/to/idmz_revoke.so
 *   plugin_opt_revoked_file /path/to/revoked.txt      (required)
 *   plugin_opt_rules_file /path/to/acl.rules          (optional: without it, ACLs defer)
 *   plugin_opt_report_file /path/to/refusals.log      (optional)
 *
 * The files: blank lines and lines starting with '#' are ignored; surrounding whitespace is
 * stripped; a line longer than IDMZ_MAX_LINE bytes or containing a NUL byte is skipped and
 * logged. A missing revoked file means nobody is revoked; a file that cannot be read on reload
 * keeps the previous contents (never forgets a revocation or opens an ACL because of an I/O
 * error); at start it stops the broker.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define IDMZ_MAX_LINE 1024
#define IDMZ_MAX_ENTRIES 1000000
#define IDMZ_TICK_CHECK_NS 100000000L /* stat the files at most every 100 ms */
#define IDMZ_MAX_IDENTITY 512
#define IDMZ_MAX_SUFFIX 64
#define IDMZ_REPORT_CLIENT_ID 128
#define IDMZ_REPORT_TOPIC 1024
#define IDMZ_REPORT_SLOTS 1024
#define IDMZ_REPORT_INTERVAL_NS 1000000000L
#define IDMZ_MAX_COUNT 999999999999ULL /* what relay/broker_refusals.py accepts */
#define IDMZ_RULE_FIELDS 5
#define IDMZ_MAX_NUMBER 32      /* characters of a rate or burst field */
#define IDMZ_MAX_RATE 1000000.0 /* policies/broker_config.py: MAX_CAP_RATE */
#define IDMZ_MAX_BURST 1000000000.0 /* policies/broker_config.py: MAX_CAP_BURST */
#define IDMZ_REPORT_LINE (64 + 3 * (IDMZ_MAX_IDENTITY + IDMZ_REPORT_CLIENT_ID + IDMZ_REPORT_TOPIC))

/* The refusals reported; the appliance maps each to an audit record. */
enum idmz_event {
	EV_ACL_DENIED,       /* a publish or delivery the rules do not grant */
	EV_REVOKED,          /* a revoked identity connecting, publishing or receiving */
	EV_CLIENT_ID,        /* a client id that does not belong to the certificate's identity */
	EV_IDENTITY,         /* no certificate, or a CN that is not an identity path */
	EV_RATE_LIMITED,     /* a publish a capped rule grants, over its rate */
};
static const char *const EVENT_NAMES[] = {"acl_denied", "revoked", "client_id_refused", "identity_refused",
	"rate_limited"};

struct name_set {
	char **names;
	size_t count;
};

struct rule {
	char *identity;
	int access; /* MOSQ_ACL_READ or MOSQ_ACL_WRITE */
	char *filter;
	bool capped;          /* a write rule with a rate cap: a token bucket */
	double rate;          /* tokens a second */
	double burst;         /* the bucket's size */
	double tokens;
	struct timespec last; /* CLOCK_MONOTONIC of the last refill */
};

struct rule_set {
	struct rule *rules; /* sorted by identity */
	size_t count;
	bool loaded;
};

/* What a file was when last read: a change (atomic replace = new inode) is noticed on the
 * next tick even if a SIGHUP is lost (Mosquitto drops one that arrives during a reload). */
struct file_seen {
	bool exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct report_slot {
	bool used;
	int event;
	int access;
	char *identity;
	unsigned long long pending; /* refusals since the line written for the first one */
	char *client_id;       /* the latest one's, escaped when written */
	char *topic;
	bool topic_truncated;
};

struct idmz_state {
	mosquitto_plugin_id_t *id;
	char *revoked_path;
	char *rules_path;
	char *report_path;
	int report_fd;
	struct name_set revoked;
	struct rule_set rules;
	struct file_seen revoked_seen;
	struct file_seen rules_seen;
	struct timespec checked;
	struct timespec flushed;
	struct report_slot slots[IDMZ_REPORT_SLOTS];
};

static struct idmz_state state;

/* -- small helpers ------------------------------------------------------------------------ */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static bool identity_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '/';
}

static bool suffix_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
		|| c == '-';
}

static bool report_char(unsigned char c)
{
	return suffix_char(c) || c == '.' || c == '/' || c == ':' || c == '+' || c == '#' || c == '$';
}

/* An identity path as pki.identity writes it: non-empty, bounded, [a-z0-9_/-] only. */
static bool valid_identity(const char *name, size_t len)
{
	size_t i;

	if(len == 0 || len > IDMZ_MAX_IDENTITY || name[0] == '/'){
		return false;
	}
	for(i = 0; i < len; i++){
		if(!identity_char((unsigned char)name[i])){
			return false;
		}
	}
	return true;
}

static long elapsed_ns(const struct timespec *from, const struct timespec *to)
{
	return (long)(to->tv_sec - from->tv_sec) * 1000000000L + (to->tv_nsec - from->tv_nsec);
}

/* -- reading the files ------------------------------------------------------------------- */

typedef int (*line_fn)(void *ctx, char *line);

/* Strip the line; call fn unless it is blank or a comment. */
static int take_line(line_fn fn, void *ctx, char *line)
{
	char *start = line;
	char *end;

	while(*start != '\0' && is_space(*start)){
		start++;
	}
	end = start + strlen(start);
	while(end > start && is_space(end[-1])){
		end--;
	}
	*end = '\0';
	if(*start == '\0' || *start == '#'){
		return MOSQ_ERR_SUCCESS;
	}
	return fn(ctx, start);
}

/* Read path line by line into fn. Returns MOSQ_ERR_SUCCESS, MOSQ_ERR_NOT_FOUND for a missing
 * file, or an error. Byte by byte, so a NUL or an over-long line can never swallow the line
 * after it; at most IDMZ_MAX_ENTRIES lines are taken. */
static int read_lines(const char *path, line_fn fn, void *ctx)
{
	FILE *fh;
	char line[IDMZ_MAX_LINE + 1];
	size_t len = 0, lineno = 0, taken = 0;
	bool too_long = false, has_nul = false;
	int c, rc;

	fh = fopen(path, "r");
	if(fh == NULL){
		if(errno == ENOENT){
			return MOSQ_ERR_NOT_FOUND;
		}
		mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: cannot open %s: %s", path, strerror(errno));
		return MOSQ_ERR_UNKNOWN;
	}
	for(;;){
		c = getc(fh);
		if(c != EOF && c != '\n'){
			if(c == '\0'){
				has_nul = true;
			}
			if(len < IDMZ_MAX_LINE){
				line[len++] = (char)c;
			}else{
				too_long = true;
			}
			continue;
		}
		if(c == EOF && len == 0 && !too_long){
			break; /* the end, after a final newline (or an empty file) */
		}
		lineno++;
		line[len] = '\0';
		if(too_long){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"idmz_revoke: %s line %zu is longer than %d bytes; ignored",
					path, lineno, IDMZ_MAX_LINE);
		}else if(has_nul){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"idmz_revoke: %s line %zu contains a NUL byte; ignored", path, lineno);
		}else if(taken >= IDMZ_MAX_ENTRIES){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"idmz_revoke: %s has more than %d entries; the rest are ignored",
					path, IDMZ_MAX_ENTRIES);
			break;
		}else{
			taken++;
			rc = take_line(fn, ctx, line);
			if(rc != MOSQ_ERR_SUCCESS){
				mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: out of memory reading %s", path);
				fclose(fh);
				return rc;
			}
		}
		len = 0;
		too_long = false;
		has_nul = false;
		if(c == EOF){
			break;
		}
	}
	if(ferror(fh)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: error reading %s", path);
		fclose(fh);
		return MOSQ_ERR_UNKNOWN;
	}
	fclose(fh);
	return MOSQ_ERR_SUCCESS;
}

/* -- the revoked set ---------------------------------------------------------------------- */

struct name_builder {
	struct name_set set;
	size_t capacity;
};

static void names_free(struct name_set *set)
{
	size_t i;

	for(i = 0; i < set->count; i++){
		mosquitto_free(set->names[i]);
	}
	mosquitto_free(set->names);
	set->names = NULL;
	set->count = 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Called for every PUBLISH and every delivery: a binary search over the sorted set. */
static bool names_contain(const struct name_set *set, const char *name)
{
	if(name == NULL || set->count == 0){
		return false;
	}
	return bsearch(&name, set->names, set->count, sizeof(char *), compare_names) != NULL;
}

static int add_name(void *ctx, char *line)
{
	struct name_builder *b = ctx;

	if(b->set.count == b->capacity){
		size_t grown = b->capacity ? b->capacity * 2 : 16;
		char **names = mosquitto_realloc(b->set.names, grown * sizeof(char *));
		if(names == NULL){
			return MOSQ_ERR_NOMEM;
		}
		b->set.names = names;
		b->capacity = grown;
	}
	b->set.names[b->set.count] = mosquitto_strdup(line);
	if(b->set.names[b->set.count] == NULL){
		return MOSQ_ERR_NOMEM;
	}
	b->set.count++;
	return MOSQ_ERR_SUCCESS;
}

/* Sort, then drop duplicates in place. */
static void names_finish(struct name_set *set)
{
	size_t i, kept = 0;

	if(set->count == 0){
		return;
	}
	qsort(set->names, set->count, sizeof(char *), compare_names);
	for(i = 0; i < set->count; i++){
		if(kept > 0 && strcmp(set->names[kept - 1], set->names[i]) == 0){
			mosquitto_free(set->names[i]);
		}else{
			set->names[kept++] = set->names[i];
		}
	}
	set->count = kept;
}

/* -- the rules ---------------------------------------------------------------------------- */

struct rule_builder {
	struct rule_set set;
	size_t capacity;
	size_t skipped;
};

static void rules_free(struct rule_set *set)
{
	size_t i;

	for(i = 0; i < set->count; i++){
		mosquitto_free(set->rules[i].identity);
		mosquitto_free(set->rules[i].filter);
	}
	mosquitto_free(set->rules);
	set->rules = NULL;
	set->count = 0;
	set->loaded = false;
}

static int compare_rules(const void *a, const void *b)
{
	return strcmp(((const struct rule *)a)->identity, ((const struct rule *)b)->identity);
}

/* A rate or burst field as policies/broker_config.py renders it: [0-9]+, or [0-9]+.[0-9]+ when
 * not integer; at most IDMZ_MAX_NUMBER characters; > 0 and <= max. Parsed by hand: no locale,
 * sign, exponent, hexadecimal, "inf" or "nan" can get in. */
static bool parse_number(const char *text, bool integer, double max, double *out)
{
	size_t i = 0, whole = 0, fraction = 0;
	double value = 0.0, scale = 1.0;

	if(strlen(text) > IDMZ_MAX_NUMBER){
		return false;
	}
	for(; text[i] >= '0' && text[i] <= '9'; i++, whole++){
		value = value * 10.0 + (text[i] - '0');
	}
	if(text[i] == '.' && !integer){
		for(i++; text[i] >= '0' && text[i] <= '9'; i++, fraction++){
			scale /= 10.0;
			value += (text[i] - '0') * scale;
		}
		if(fraction == 0){
			return false;
		}
	}
	if(whole == 0 || text[i] != '\0' || !(value > 0.0) || value > max){
		return false;
	}
	*out = value;
	return true;
}

/* "<read|write> <identity> <filter>" or "write <identity> <filter> <rate> <burst>", single
 * spaces; anything else is skipped (and counted): a malformed line grants nothing. */
static int add_rule(void *ctx, char *line)
{
	struct rule_builder *b = ctx;
	char *fields[IDMZ_RULE_FIELDS];
	char *p = line, *space;
	size_t n = 0, i;
	double rate = 0.0, burst = 0.0;
	int access;
	struct rule *r;

	for(;;){
		if(n == IDMZ_RULE_FIELDS){
			b->skipped++; /* too many fields */
			return MOSQ_ERR_SUCCESS;
		}
		fields[n++] = p;
		space = strchr(p, ' ');
		if(space == NULL){
			break;
		}
		*space = '\0';
		p = space + 1;
	}
	for(i = 0; i < n; i++){
		if(fields[i][0] == '\0'){
			b->skipped++; /* two spaces in a row */
			return MOSQ_ERR_SUCCESS;
		}
	}
	if(n != 3 && n != IDMZ_RULE_FIELDS){
		b->skipped++;
		return MOSQ_ERR_SUCCESS;
	}
	if(strcmp(fields[0], "read") == 0){
		access = MOSQ_ACL_READ;
	}else if(strcmp(fields[0], "write") == 0){
		access = MOSQ_ACL_WRITE;
	}else{
		b->skipped++;
		return MOSQ_ERR_SUCCESS;
	}
	if(!valid_identity(fields[1], strlen(fields[1])) || mosquitto_sub_topic_check(fields[2]) != MOSQ_ERR_SUCCESS){
		b->skipped++;
		return MOSQ_ERR_SUCCESS;
	}
	if(n == IDMZ_RULE_FIELDS && (access != MOSQ_ACL_WRITE
				|| !parse_number(fields[3], false, IDMZ_MAX_RATE, &rate)
				|| !parse_number(fields[4], true, IDMZ_MAX_BURST, &burst))){
		b->skipped++; /* only a write is capped, and only by numbers in range */
		return MOSQ_ERR_SUCCESS;
	}
	if(b->set.count == b->capacity){
		size_t grown = b->capacity ? b->capacity * 2 : 16;
		struct rule *rules = mosquitto_realloc(b->set.rules, grown * sizeof(struct rule));
		if(rules == NULL){
			return MOSQ_ERR_NOMEM;
		}
		b->set.rules = rules;
		b->capacity = grown;
	}
	r = &b->set.rules[b->set.count];
	memset(r, 0, sizeof(*r));
	r->access = access;
	r->capped = n == IDMZ_RULE_FIELDS;
	r->rate = rate;
	r->burst = burst;
	r->tokens = burst; /* full; load_rules carries over the level of a rule that was there */
	r->identity = mosquitto_strdup(fields[1]);
	r->filter = mosquitto_strdup(fields[2]);
	if(r->identity == NULL || r->filter == NULL){
		mosquitto_free(r->identity);
		mosquitto_free(r->filter);
		return MOSQ_ERR_NOMEM;
	}
	b->set.count++;
	return MOSQ_ERR_SUCCESS;
}

/* The index of the first rule of username (set->count if none): a binary search. */
static size_t rules_first(const struct rule_set *set, const char *username)
{
	size_t lo = 0, hi = set->count;

	while(lo < hi){
		size_t mid = lo + (hi - lo) / 2;
		if(strcmp(set->rules[mid].identity, username) < 0){
			lo = mid + 1;
		}else{
			hi = mid;
		}
	}
	return lo;
}

static double seconds_between(const struct timespec *from, const struct timespec *to)
{
	return (double)(to->tv_sec - from->tv_sec) + (double)(to->tv_nsec - from->tv_nsec) / 1e9;
}

/* Refill the rule's bucket up to now (a clock that did not advance adds nothing). */
static void refill(struct rule *r, const struct timespec *now)
{
	double elapsed = seconds_between(&r->last, now);

	if(elapsed > 0.0){
		r->tokens += elapsed * r->rate;
		if(!(r->tokens <= r->burst)){
			r->tokens = r->burst;
		}
		r->last = *now;
	}
}

enum decision { NOT_GRANTED, GRANTED, OVER_CAP };

/* Does a rule of username grant access to topic, and if it is capped, is there a token? A topic
 * an uncapped rule grants is not capped; a capped one takes a token from the first matching
 * rule that has one. */
static enum decision rules_decide(struct rule_set *set, const char *username, int access, const char *topic)
{
	struct timespec now;
	bool over = false, have_now = false, match;
	size_t i;

	if(username == NULL || topic == NULL){
		return NOT_GRANTED;
	}
	for(i = rules_first(set, username); i < set->count && strcmp(set->rules[i].identity, username) == 0; i++){
		struct rule *r = &set->rules[i];
		if(r->access != access){
			continue;
		}
		match = false;
		if(mosquitto_topic_matches_sub(r->filter, topic, &match) != MOSQ_ERR_SUCCESS || !match){
			continue;
		}
		if(!r->capped){
			return GRANTED;
		}
		if(!have_now){
			/* CLOCK_MONOTONIC cannot fail here; if it did, nothing is refilled (fail closed). */
			have_now = clock_gettime(CLOCK_MONOTONIC, &now) == 0;
		}
		if(have_now){
			refill(r, &now);
		}
		if(r->tokens >= 1.0){
			r->tokens -= 1.0;
			return GRANTED;
		}
		over = true;
	}
	return over ? OVER_CAP : NOT_GRANTED;
}

/* Start each capped rule of the new set where the same rule (identity, access, filter) of the
 * old set is: a reload does not refill the buckets. A new rule starts full. */
static void carry_buckets(struct rule_set *fresh, const struct rule_set *old)
{
	struct timespec now;
	size_t i, j;

	if(clock_gettime(CLOCK_MONOTONIC, &now) != 0){
		memset(&now, 0, sizeof(now));
	}
	for(i = 0; i < fresh->count; i++){
		struct rule *r = &fresh->rules[i];
		r->last = now;
		if(!r->capped){
			continue;
		}
		for(j = rules_first(old, r->identity); j < old->count && strcmp(old->rules[j].identity, r->identity) == 0; j++){
			struct rule o = old->rules[j];
			if(o.capped && o.access == r->access && strcmp(o.filter, r->filter) == 0){
				refill(&o, &now);
				r->tokens = o.tokens < r->burst ? o.tokens : r->burst;
				break;
			}
		}
	}
}

/* -- reports ------------------------------------------------------------------------------ */

/* Escape at most max bytes of in into out (3 * max + 1 bytes); "~" for an empty field. */
static void escape_field(char *out, const char *in, size_t max, bool *truncated)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, o = 0;

	if(truncated != NULL){
		*truncated = false;
	}
	if(in == NULL || in[0] == '\0'){
		strcpy(out, "~");
		return;
	}
	for(i = 0; in[i] != '\0'; i++){
		unsigned char c = (unsigned char)in[i];
		if(i == max){
			if(truncated != NULL){
				*truncated = true;
			}
			break;
		}
		if(report_char(c)){
			out[o++] = (char)c;
		}else{
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
	}
	out[o] = '\0';
}

static void write_report(int event, int access, unsigned long long count, const char *identity,
		const char *client_id, const char *topic)
{
	static char line[IDMZ_REPORT_LINE];
	static char e_identity[3 * IDMZ_MAX_IDENTITY + 1];
	static char e_client[3 * IDMZ_REPORT_CLIENT_ID + 1];
	static char e_topic[3 * IDMZ_REPORT_TOPIC + 1];
	const char *access_name;
	bool truncated;
	int n;

	if(state.report_fd < 0){
		return;
	}
	access_name = access == MOSQ_ACL_WRITE ? "write" : access == MOSQ_ACL_READ ? "read" : "connect";
	escape_field(e_identity, identity, IDMZ_MAX_IDENTITY, NULL);
	escape_field(e_client, client_id, IDMZ_REPORT_CLIENT_ID, NULL);
	escape_field(e_topic, topic, IDMZ_REPORT_TOPIC, &truncated);
	n = snprintf(line, sizeof(line), "v1 %s %s %llu %d %s %s %s\n", EVENT_NAMES[event], access_name,
			count, truncated ? 1 : 0, e_identity, e_client, e_topic);
	if(n <= 0 || (size_t)n >= sizeof(line)){
		return; /* cannot happen: every field is bounded */
	}
	/* O_APPEND: one write, one line. */
	if(write(state.report_fd, line, (size_t)n) != n){
		mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: cannot append to %s: %s",
				state.report_path, strerror(errno));
	}
}

static void slot_clear(struct report_slot *slot)
{
	mosquitto_free(slot->identity);
	mosquitto_free(slot->client_id);
	mosquitto_free(slot->topic);
	memset(slot, 0, sizeof(*slot));
}

/* Write the aggregated counts and forget every slot: a new interval starts. */
static void flush_reports(void)
{
	size_t i;

	for(i = 0; i < IDMZ_REPORT_SLOTS; i++){
		struct report_slot *slot = &state.slots[i];
		if(!slot->used){
			continue;
		}
		if(slot->pending > 0){
			write_report(slot->event, slot->access, slot->pending, slot->identity,
					slot->client_id, slot->topic);
		}
		slot_clear(slot);
	}
}

static char *dup_bounded(const char *text, size_t max)
{
	size_t len;
	char *out;

	if(text == NULL){
		return NULL;
	}
	len = strnlen(text, max + 1); /* one more: escape_field then sees it was cut */
	out = mosquitto_malloc(len + 1);
	if(out != NULL){
		memcpy(out, text, len);
		out[len] = '\0';
	}
	return out;
}

static size_t slot_hash(int event, int access, const char *identity)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	const char *p;

	for(p = identity ? identity : ""; *p != '\0'; p++){
		h = (h ^ (unsigned char)*p) * 16777619u;
	}
	h = (h ^ (uint32_t)event) * 16777619u;
	h = (h ^ (uint32_t)access) * 16777619u;
	return h % IDMZ_REPORT_SLOTS;
}

static void report(int event, int access, const char *identity, const char *client_id, const char *topic)
{
	size_t i, start;
	struct report_slot *slot;

	if(state.report_fd < 0){
		return;
	}
	start = slot_hash(event, access, identity);
	for(i = 0; i < IDMZ_REPORT_SLOTS; i++){
		slot = &state.slots[(start + i) % IDMZ_REPORT_SLOTS];
		if(!slot->used){
			break;
		}
		if(slot->event == event && slot->access == access
				&& strcmp(slot->identity, identity ? identity : "") == 0){
			/* Seen in this interval: counted, written when it ends. */
			char *cid = dup_bounded(client_id, IDMZ_REPORT_CLIENT_ID);
			char *tp = dup_bounded(topic, IDMZ_REPORT_TOPIC);
			if(slot->pending < IDMZ_MAX_COUNT){
				slot->pending++; /* saturates: the line stays one the appliance parses */
			}
			if(cid != NULL || client_id == NULL){
				mosquitto_free(slot->client_id);
				slot->client_id = cid;
			}
			if(tp != NULL || topic == NULL){
				mosquitto_free(slot->topic);
				slot->topic = tp;
			}
			return;
		}
	}
	if(i == IDMZ_REPORT_SLOTS){ /* full: write what is pending and start a new interval */
		flush_reports();
		slot = &state.slots[start];
	}
	/* The first of its kind in this interval: written at once. */
	write_report(event, access, 1, identity, client_id, topic);
	slot->identity = mosquitto_strdup(identity ? identity : "");
	if(slot->identity == NULL){
		return; /* out of memory: nothing to aggregate into, the next one is written again */
	}
	slot->used = true;
	slot->event = event;
	slot->access = access;
	slot->pending = 0;
}

static void open_report(void)
{
	if(state.report_fd >= 0){
		close(state.report_fd);
		state.report_fd = -1;
	}
	if(state.report_path == NULL){
		return;
	}
	state.report_fd = open(state.report_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if(state.report_fd < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: cannot open %s: %s", state.report_path,
				strerror(errno));
	}
}

/* -- loading ------------------------------------------------------------------------------ */

static struct file_seen look(const char *path)
{
	struct file_seen seen;
	struct stat st;

	memset(&seen, 0, sizeof(seen));
	if(path != NULL && stat(path, &st) == 0){
		seen.exists = true;
		seen.dev = st.st_dev;
		seen.ino = st.st_ino;
		seen.size = st.st_size;
		seen.mtime = st.st_mtim;
	}
	return seen;
}

static bool same_file(const struct file_seen *a, const struct file_seen *b)
{
	return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size
		&& a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Load the revoked file; on success replace the set and, if kick, disconnect every revoked
 * username. */
static int load_revoked(bool kick)
{
	struct name_builder b;
	size_t i;
	int rc;

	memset(&b, 0, sizeof(b));
	state.revoked_seen = look(state.revoked_path); /* before reading: a later change is seen again */
	rc = read_lines(state.revoked_path, add_name, &b);
	if(rc == MOSQ_ERR_NOT_FOUND){
		rc = MOSQ_ERR_SUCCESS; /* nobody is revoked */
	}
	if(rc != MOSQ_ERR_SUCCESS){
		names_free(&b.set);
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"idmz_revoke: keeping the previous %zu revoked identities", state.revoked.count);
		return rc;
	}
	names_finish(&b.set);
	names_free(&state.revoked);
	state.revoked = b.set;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "idmz_revoke: %zu revoked identities from %s",
			state.revoked.count, state.revoked_path);
	if(kick){
		for(i = 0; i < state.revoked.count; i++){
			mosquitto_kick_client_by_username(state.revoked.names[i], false);
		}
	}
	return MOSQ_ERR_SUCCESS;
}

/* Load the rules file. A missing file is an error (it is always rendered): the plugin keeps
 * the previous rules, and at start has none, so nothing is allowed. */
static int load_rules(void)
{
	struct rule_builder b;
	int rc;

	if(state.rules_path == NULL){
		return MOSQ_ERR_SUCCESS;
	}
	memset(&b, 0, sizeof(b));
	state.rules_seen = look(state.rules_path);
	rc = read_lines(state.rules_path, add_rule, &b);
	if(rc != MOSQ_ERR_SUCCESS){
		rules_free(&b.set);
		mosquitto_log_printf(MOSQ_LOG_WARNING, "idmz_revoke: keeping the previous %zu rules (%s unreadable)",
				state.rules.count, state.rules_path);
		return rc;
	}
	if(b.set.count > 1){
		qsort(b.set.rules, b.set.count, sizeof(struct rule), compare_rules);
	}
	carry_buckets(&b.set, &state.rules);
	b.set.loaded = true;
	rules_free(&state.rules);
	state.rules = b.set;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "idmz_revoke: %zu rules from %s (%zu malformed ignored)",
			state.rules.count, state.rules_path, b.skipped);
	return MOSQ_ERR_SUCCESS;
}

static const char *find_option(struct mosquitto_opt *options, int option_count, const char *key)
{
	int i;

	for(i = 0; i < option_count; i++){
		if(options[i].key != NULL && strcmp(options[i].key, key) == 0){
			return options[i].value;
		}
	}
	return NULL;
}

/* -- callbacks ---------------------------------------------------------------------------- */

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	load_revoked(true);
	load_rules();
	open_report();
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct file_seen now;
	struct timespec clock_now;
	long since;

	(void)event;
	(void)event_data;
	(void)userdata;
	/* Ticks come with every pass of the broker's loop: under load, many per millisecond. */
	if(clock_gettime(CLOCK_MONOTONIC, &clock_now) != 0){
		return MOSQ_ERR_SUCCESS;
	}
	since = elapsed_ns(&state.flushed, &clock_now);
	if(since < 0 || since >= IDMZ_REPORT_INTERVAL_NS){
		state.flushed = clock_now;
		flush_reports();
	}
	since = elapsed_ns(&state.checked, &clock_now);
	if(since >= 0 && since < IDMZ_TICK_CHECK_NS){
		return MOSQ_ERR_SUCCESS;
	}
	state.checked = clock_now;
	now = look(state.revoked_path);
	if(!same_file(&now, &state.revoked_seen)){
		load_revoked(true);
	}
	if(state.rules_path != NULL){
		now = look(state.rules_path);
		if(!same_file(&now, &state.rules_seen)){
			load_rules();
		}
	}
	return MOSQ_ERR_SUCCESS;
}

/* The certificate's CN, if it is an identity path; NULL otherwise (caller frees). */
static char *certificate_identity(struct mosquitto *client)
{
	X509 *cert = mosquitto_client_certificate(client);
	X509_NAME *name;
	X509_NAME_ENTRY *entry;
	ASN1_STRING *data;
	char *identity = NULL;
	int i, len;

	if(cert == NULL){
		return NULL;
	}
	name = X509_get_subject_name(cert);
	i = name != NULL ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	/* Exactly one CN, as the idmz CA writes it. */
	if(i >= 0 && X509_NAME_get_index_by_NID(name, NID_commonName, i) == -1){
		entry = X509_NAME_get_entry(name, i);
		data = entry != NULL ? X509_NAME_ENTRY_get_data(entry) : NULL;
		len = data != NULL ? ASN1_STRING_length(data) : -1;
		if(len > 0 && valid_identity((const char *)ASN1_STRING_get0_data(data), (size_t)len)){
			identity = mosquitto_malloc((size_t)len + 1);
			if(identity != NULL){
				memcpy(identity, ASN1_STRING_get0_data(data), (size_t)len);
				identity[len] = '\0';
			}
		}
	}
	X509_free(cert);
	return identity;
}

/* client_id is identity, or identity ":" suffix with suffix [A-Za-z0-9_-]{1,64}. */
static bool client_id_belongs_to(const char *client_id, const char *identity)
{
	size_t n = strlen(identity), i;
	const char *suffix;

	if(client_id == NULL || strncmp(client_id, identity, n) != 0){
		return false;
	}
	if(client_id[n] == '\0'){
		return true;
	}
	if(client_id[n] != ':'){
		return false;
	}
	suffix = client_id + n + 1;
	for(i = 0; suffix[i] != '\0'; i++){
		if(i >= IDMZ_MAX_SUFFIX || !suffix_char((unsigned char)suffix[i])){
			return false;
		}
	}
	return i > 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	char *identity;
	int rc;

	(void)event;
	(void)userdata;
	identity = certificate_identity(ed->client);
	if(identity == NULL){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "idmz_revoke: refused a connect without an identity certificate");
		report(EV_IDENTITY, MOSQ_ACL_NONE, NULL, client_id, NULL);
		return MOSQ_ERR_AUTH;
	}
	if(names_contain(&state.revoked, identity)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "idmz_revoke: refused connect of revoked %s", identity);
		report(EV_REVOKED, MOSQ_ACL_NONE, identity, client_id, NULL);
		mosquitto_free(identity);
		return MOSQ_ERR_AUTH;
	}
	if(!client_id_belongs_to(client_id, identity)){
		/* The client id is not logged: it is the client's text. The report escapes it. */
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"idmz_revoke: refused a connect of %s with a client id that is not its own", identity);
		report(EV_CLIENT_ID, MOSQ_ACL_NONE, identity, client_id, NULL);
		mosquitto_free(identity);
		return MOSQ_ERR_AUTH;
	}
	/* Whatever username the CONNECT carried, the session's username is the identity. */
	rc = mosquitto_set_username(ed->client, identity);
	mosquitto_free(identity);
	return rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);

	(void)event;
	(void)userdata;
	if(ed->access == MOSQ_ACL_SUBSCRIBE || ed->access == MOSQ_ACL_UNSUBSCRIBE){
		/* As acl_file: read rights are checked on each delivery. A revoked identity is not. */
		if(names_contain(&state.revoked, username)){
			return MOSQ_ERR_ACL_DENIED;
		}
		return state.rules.loaded ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
	}
	if(names_contain(&state.revoked, username)){
		report(EV_REVOKED, ed->access, username, mosquitto_client_id(ed->client), ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
	if(!state.rules.loaded){
		/* No rules file: the rendered acl_file decides. Never MOSQ_ERR_SUCCESS here: in 2.0.11
		 * that would override the acl_file's deny. */
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	switch(rules_decide(&state.rules, username, ed->access, ed->topic)){
	case GRANTED:
		return MOSQ_ERR_SUCCESS;
	case OVER_CAP:
		report(EV_RATE_LIMITED, ed->access, username, mosquitto_client_id(ed->client), ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	case NOT_GRANTED:
	default:
		report(EV_ACL_DENIED, ed->access, username, mosquitto_client_id(ed->client), ed->topic);
		return MOSQ_ERR_ACL_DENIED;
	}
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

static int dup_option(char **out, struct mosquitto_opt *options, int option_count, const char *key)
{
	const char *value = find_option(options, option_count, key);

	*out = NULL;
	if(value == NULL || value[0] == '\0'){
		return MOSQ_ERR_SUCCESS;
	}
	*out = mosquitto_strdup(value);
	return *out != NULL ? MOSQ_ERR_SUCCESS : MOSQ_ERR_NOMEM;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int rc;

	*userdata = NULL;
	memset(&state, 0, sizeof(state));
	state.report_fd = -1;
	state.id = identifier;
	rc = dup_option(&state.revoked_path, options, option_count, "revoked_file");
	if(rc == MOSQ_ERR_SUCCESS && state.revoked_path == NULL){
		mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: plugin_opt_revoked_file is required");
		return MOSQ_ERR_INVAL;
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = dup_option(&state.rules_path, options, option_count, "rules_file");
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = dup_option(&state.report_path, options, option_count, "report_file");
	}
	if(rc != MOSQ_ERR_SUCCESS){
		return rc;
	}
	/* No client is connected yet: read only. A file that cannot be read at start is an
	 * error, so the broker does not start without the revocations or rules it was given. */
	rc = load_revoked(false);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = load_rules();
	}
	if(rc != MOSQ_ERR_SUCCESS){
		return rc;
	}
	open_report();
	clock_gettime(CLOCK_MONOTONIC, &state.flushed);
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	}
	if(rc == MOSQ_ERR_SUCCESS){
		rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	}
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	if(state.id != NULL){
		mosquitto_callback_unregister(state.id, MOSQ_EVT_RELOAD, on_reload, NULL);
		mosquitto_callback_unregister(state.id, MOSQ_EVT_TICK, on_tick, NULL);
		mosquitto_callback_unregister(state.id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(state.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	}
	flush_reports();
	if(state.report_fd >= 0){
		close(state.report_fd);
	}
	names_free(&state.revoked);
	rules_free(&state.rules);
	mosquitto_free(state.revoked_path);
	mosquitto_free(state.rules_path);
	mosquitto_free(state.report_path);
	memset(&state, 0, sizeof(state));
	return MOSQ_ERR_SUCCESS;
}
