/*
 * idmz_revoke: a Mosquitto 2.0 plugin (plugin API version 5) that evicts revoked devices.
 *
 * Mosquitto 2.0.11 re-reads `crlfile` on SIGHUP for new TLS handshakes only; a client whose
 * certificate was revoked stays connected (docs/adr/0057-revoke-plugin.md). The relay
 * appliance writes the revoked identities (certificate CN = MQTT username, the broker runs
 * `use_identity_as_username`) to a file, one per line, and sends SIGHUP. This plugin reads
 * that file at start, on every reload (MOSQ_EVT_RELOAD) and whenever a tick (MOSQ_EVT_TICK)
 * finds it changed (stat: inode, size, mtime; Mosquitto loses a SIGHUP that arrives while it
 * is still reloading), kicks each revoked username, and refuses those usernames on
 * MOSQ_EVT_ACL_CHECK and MOSQ_EVT_BASIC_AUTH.
 *
 * How this combines with the rendered acl_file in 2.0.11 (measured, see
 * tests/relay/test_revoke_plugin.py): plugin ACL callbacks are asked first and a plugin's
 * MOSQ_ERR_SUCCESS would OVERRIDE an acl_file deny; acl_file decides only when every plugin
 * returns MOSQ_ERR_PLUGIN_DEFER. So this plugin never allows anything: it denies the revoked
 * and defers everything else. MOSQ_EVT_BASIC_AUTH is not called for clients authenticated by
 * `use_identity_as_username`; there a revoked device's reconnect is refused at TLS by the
 * reloaded CRL, and the callback only matters for listeners that use passwords.
 *
 * Options (mosquitto.conf):
 *   plugin /path/to/idmz_revoke.so
 *   plugin_opt_revoked_file /path/to/revoked.txt
 *
 * The file: one identity per line; blank lines and lines starting with '#' are ignored;
 * surrounding whitespace is stripped; a line longer than IDMZ_MAX_LINE bytes or containing a
 * NUL byte is skipped and logged (identity paths are at most 6 x 63 + 5 characters). A missing file means nobody is
 * revoked; a file that cannot be read on reload keeps the previous list (never forgets a
 * revocation because of an I/O error); at start it stops the broker.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define IDMZ_MAX_LINE 1024
#define IDMZ_MAX_ENTRIES 1000000
#define IDMZ_TICK_CHECK_NS 100000000L /* stat the file at most every 100 ms */

struct revoked_set {
	char **names;
	size_t count;
};

/* What the file was when last read: a change (atomic replace = new inode) is noticed on the
 * next tick even if a SIGHUP is lost (Mosquitto drops one that arrives during a reload). */
struct file_seen {
	bool exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct idmz_state {
	mosquitto_plugin_id_t *id;
	char *path;
	struct revoked_set set;
	struct file_seen seen;
	struct timespec checked;
};

static struct idmz_state state;

static void set_free(struct revoked_set *set)
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
static bool set_contains(const struct revoked_set *set, const char *name)
{
	if(name == NULL || set->count == 0){
		return false;
	}
	return bsearch(&name, set->names, set->count, sizeof(char *), compare_names) != NULL;
}

/* Sort, then drop duplicates in place. */
static void set_finish(struct revoked_set *set)
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

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Add one line (NUL-terminated, no newline) to the set unless it is blank or a comment.
 * Returns MOSQ_ERR_SUCCESS or MOSQ_ERR_NOMEM. */
static int add_line(struct revoked_set *set, size_t *capacity, char *line)
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
	if(set->count == *capacity){
		size_t grown = *capacity ? *capacity * 2 : 16;
		char **names = mosquitto_realloc(set->names, grown * sizeof(char *));
		if(names == NULL){
			return MOSQ_ERR_NOMEM;
		}
		set->names = names;
		*capacity = grown;
	}
	set->names[set->count] = mosquitto_strdup(start);
	if(set->names[set->count] == NULL){
		return MOSQ_ERR_NOMEM;
	}
	set->count++;
	return MOSQ_ERR_SUCCESS;
}

/* Read the file into *out. Returns MOSQ_ERR_SUCCESS (a missing file is an empty set) or an
 * error, in which case *out is untouched. Byte by byte, so a NUL or an over-long line can
 * never swallow the line after it. */
static int read_revoked(const char *path, struct revoked_set *out)
{
	FILE *fh;
	char line[IDMZ_MAX_LINE + 1];
	struct revoked_set set = {NULL, 0};
	size_t capacity = 0;
	size_t len = 0;
	size_t lineno = 0;
	bool too_long = false;
	bool has_nul = false;
	int c;

	fh = fopen(path, "r");
	if(fh == NULL){
		if(errno == ENOENT){
			*out = set;
			return MOSQ_ERR_SUCCESS;
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
		}else if(set.count >= IDMZ_MAX_ENTRIES){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"idmz_revoke: %s has more than %d entries; the rest are ignored",
					path, IDMZ_MAX_ENTRIES);
			break;
		}else if(add_line(&set, &capacity, line) != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: out of memory reading %s", path);
			fclose(fh);
			set_free(&set);
			return MOSQ_ERR_NOMEM;
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
		set_free(&set);
		return MOSQ_ERR_UNKNOWN;
	}
	fclose(fh);
	set_finish(&set);
	*out = set;
	return MOSQ_ERR_SUCCESS;
}

static struct file_seen look(const char *path)
{
	struct file_seen seen;
	struct stat st;

	memset(&seen, 0, sizeof(seen));
	if(stat(path, &st) == 0){
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

/* Load the file; on success replace the set and, if kick, disconnect every revoked username. */
static int load(bool kick)
{
	struct revoked_set fresh;
	size_t i;
	int rc;

	state.seen = look(state.path); /* before reading: a later change is seen again */
	rc = read_revoked(state.path, &fresh);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"idmz_revoke: keeping the previous %zu revoked identities", state.set.count);
		return rc;
	}
	set_free(&state.set);
	state.set = fresh;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "idmz_revoke: %zu revoked identities from %s",
			state.set.count, state.path);
	if(kick){
		for(i = 0; i < state.set.count; i++){
			mosquitto_kick_client_by_username(state.set.names[i], false);
		}
	}
	return MOSQ_ERR_SUCCESS;
}

static const char *find_option(struct mosquitto_opt *options, int option_count)
{
	int i;

	for(i = 0; i < option_count; i++){
		if(options[i].key != NULL && strcmp(options[i].key, "revoked_file") == 0){
			return options[i].value;
		}
	}
	return NULL;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	load(true);
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct file_seen now;
	struct timespec clock_now;
	long elapsed_ns;

	(void)event;
	(void)event_data;
	(void)userdata;
	/* Ticks come with every pass of the broker's loop: under load, many per millisecond. */
	if(clock_gettime(CLOCK_MONOTONIC, &clock_now) != 0){
		return MOSQ_ERR_SUCCESS;
	}
	elapsed_ns = (long)(clock_now.tv_sec - state.checked.tv_sec) * 1000000000L
		+ (clock_now.tv_nsec - state.checked.tv_nsec);
	if(elapsed_ns >= 0 && elapsed_ns < IDMZ_TICK_CHECK_NS){
		return MOSQ_ERR_SUCCESS;
	}
	state.checked = clock_now;
	now = look(state.path);
	if(!same_file(&now, &state.seen)){
		load(true);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *username;

	(void)event;
	(void)userdata;
	username = ed->username != NULL ? ed->username : mosquitto_client_username(ed->client);
	if(set_contains(&state.set, username)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "idmz_revoke: refused connect of revoked %s", username);
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;

	(void)event;
	(void)userdata;
	if(set_contains(&state.set, mosquitto_client_username(ed->client))){
		return MOSQ_ERR_ACL_DENIED;
	}
	/* Never MOSQ_ERR_SUCCESS: in 2.0.11 that would override the acl_file's deny. */
	return MOSQ_ERR_PLUGIN_DEFER;
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

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	const char *path = find_option(options, option_count);
	int rc;

	*userdata = NULL;
	if(path == NULL || path[0] == '\0'){
		mosquitto_log_printf(MOSQ_LOG_ERR, "idmz_revoke: plugin_opt_revoked_file is required");
		return MOSQ_ERR_INVAL;
	}
	memset(&state, 0, sizeof(state));
	state.id = identifier;
	state.path = mosquitto_strdup(path);
	if(state.path == NULL){
		return MOSQ_ERR_NOMEM;
	}
	/* No client is connected yet: read only. A file that cannot be read at start is an
	 * error, so the broker does not start without the revocations it was told about. */
	rc = load(false);
	if(rc != MOSQ_ERR_SUCCESS){
		return rc;
	}
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
	set_free(&state.set);
	mosquitto_free(state.path);
	memset(&state, 0, sizeof(state));
	return MOSQ_ERR_SUCCESS;
}
