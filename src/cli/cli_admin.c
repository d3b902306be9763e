/*
 * cli_admin.c - `frapi collections create` and `frapi keys create`: the
 * way to make collections and API keys until the dashboard exists.
 *
 * Both open the store in the data directory (FRAPI_DATA_DIR, the config
 * file, or --data-dir) and print one JSON object on stdout.
 */
#include "api/keyguard.h"
#include "auth/apikey.h"
#include "auth/audit.h"
#include "auth/ipallow.h"
#include "cli/cli.h"
#include "config/config.h"
#include "store/store_sqlite.h"
#include "util/log.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Returns the value of flag argv[*i] ("--x V" or "--x=V"), advancing *i,
 * or NULL when argv[*i] is not that flag or lacks its value. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag,
                              bool *missing)
{
        size_t n = strlen(flag);
        if (strncmp(argv[*i], flag, n) != 0)
                return NULL;
        if (argv[*i][n] == '=')
                return argv[*i] + n + 1;
        if (argv[*i][n] != '\0')
                return NULL;
        if (*i + 1 >= argc) {
                *missing = true;
                return NULL;
        }
        return argv[++*i];
}

/* The data directory from the defaults, config file and environment, then
 * overridden by a --data-dir flag already pulled out by the caller. */
static int data_dir(const char *flag_dir, char *out, size_t cap)
{
        struct config cfg;
        char err[256];

        config_default(&cfg);
        const char *file = getenv("FRAPI_CONFIG");
        if ((file && config_apply_file(&cfg, file, err, sizeof err) != 0) ||
            config_apply_env(&cfg, err, sizeof err) != 0) {
                fprintf(stderr, "frapi: %s\n", err);
                return -1;
        }
        snprintf(out, cap, "%s", flag_dir ? flag_dir : cfg.data_dir);
        if (mkdir(out, 0700) != 0 && errno != EEXIST) {
                fprintf(stderr,
                        "frapi: cannot create the data directory %s: "
                        "%s\n",
                        out, strerror(errno));
                return -1;
        }
        return 0;
}

/* Opens the store of dir, saying why on stderr when it cannot. */
static struct store *open_store(const char *dir)
{
        struct store *s = NULL;
        char err[512];
        if (store_sqlite_open(dir, &s, err, sizeof err) != STORE_OK)
                fprintf(stderr, "frapi: %s\n", err);
        return s;
}

/*
 * Records a management action taken on the command line in the audit
 * trail: event such as "collection.create", detail naming what it acted on
 * (never a secret).  The address is "local" and the user agent names the
 * operating-system user that ran the command.
 */
static void admin_audit(struct store *s, const char *event, const char *detail)
{
        char agent[128];
        const char *user = getenv("USER");

        snprintf(agent, sizeof agent, "frapi-cli (%s)", user ? user : "?");
        if (audit_migrate(s) != 0)
                return;
        audit_record(s, event, "ok", NULL, NULL, "local", agent, detail);
}

static int print_json(json_t *obj)
{
        if (!obj)
                return CLI_INTERNAL;
        char *text = json_dumps(obj, JSON_INDENT(2) | JSON_ENSURE_ASCII |
                                             JSON_REAL_PRECISION(7));
        json_decref(obj);
        if (!text)
                return CLI_INTERNAL;
        printf("%s\n", text);
        free(text);
        return CLI_OK;
}

static void collections_usage(FILE *to)
{
        fprintf(to, "usage: frapi collections create NAME [--threshold T] "
                    "[--keep-originals] [--data-dir DIR]\n");
}

int cli_collections(int argc, char **argv)
{
        const char *name = NULL, *dir_flag = NULL;
        struct store_collection c = {0};
        struct store *s = NULL;
        char dir[CONFIG_STR];
        int rc = CLI_USAGE;

        /* Arguments: the verb, one name, and options in any order. */
        if (argc < 1 || strcmp(argv[0], "create") != 0)
                goto usage;
        c.match_threshold = FACE_DEFAULT_MATCH_THRESHOLD;
        for (int i = 1; i < argc; i++) {
                bool missing = false;
                const char *v;
                if ((v = flag_value(argc, argv, &i, "--threshold", &missing))) {
                        char *end;
                        c.match_threshold = strtof(v, &end);
                        if (*end || !(c.match_threshold >= 0.0f &&
                                      c.match_threshold <= 1.0f)) {
                                fprintf(stderr, "frapi: --threshold must be a "
                                                "number from 0 to 1\n");
                                goto usage;
                        }
                } else if ((v = flag_value(argc, argv, &i, "--data-dir",
                                           &missing))) {
                        dir_flag = v;
                } else if (strcmp(argv[i], "--keep-originals") == 0) {
                        c.keep_originals = true;
                } else if (missing || argv[i][0] == '-' || name) {
                        goto usage;
                } else {
                        name = argv[i];
                }
        }
        if (!name || !name[strspn(name, " \t")]) {
                fprintf(stderr, "frapi: the collection needs a non-blank "
                                "NAME\n");
                goto usage;
        }

        /* Store the collection and print what was made. */
        rc = CLI_INTERNAL;
        if (data_dir(dir_flag, dir, sizeof dir) != 0 || !(s = open_store(dir)))
                goto out;
        c.name = strdup(name);
        if (!c.name || store_collection_create(s, &c) != STORE_OK)
                goto out;
        log_info("admin", "Created collection %s.", c.id);
        admin_audit(s, "collection.create", c.id);
        rc = print_json(json_pack(
                "{s:s, s:s, s:f, s:b, s:s, s:I}", "id", c.id, "name", c.name,
                "match_threshold", round((double)c.match_threshold * 1e4) / 1e4,
                "keep_originals", c.keep_originals, "model_version",
                c.model_version, "created_ms", (json_int_t)c.created_ms));
out:
        store_collection_clear(&c);
        store_close(s);
        return rc;
usage:
        collections_usage(stderr);
        return CLI_USAGE;
}

static void keys_usage(FILE *to)
{
        fprintf(to, "usage: frapi keys create --collection ID [--rpm N] "
                    "[--allow CIDR]... [--name NAME] [--data-dir DIR]\n"
                    "       frapi keys revoke ID [--data-dir DIR]\n"
                    "       frapi keys show ID [--data-dir DIR]\n");
}

/* `frapi keys revoke ID`: the key fails with 401 API_KEY_REVOKED from
 * its next request on, even on a running server.  Revoking twice keeps
 * the first time.  `frapi keys show ID` (show true) prints the key
 * without its secret, with its last use. */
static int keys_revoke_or_show(int argc, char **argv, bool show)
{
        const char *id = NULL, *dir_flag = NULL;
        char dir[CONFIG_STR];
        struct store *s = NULL;
        int rc = CLI_INTERNAL;

        for (int i = 0; i < argc; i++) {
                bool missing = false;
                const char *v =
                        flag_value(argc, argv, &i, "--data-dir", &missing);
                if (v)
                        dir_flag = v;
                else if (missing || argv[i][0] == '-' || id)
                        goto usage;
                else
                        id = argv[i];
        }
        if (!id)
                goto usage;
        if (data_dir(dir_flag, dir, sizeof dir) != 0 || !(s = open_store(dir)))
                goto out;
        json_t *info = NULL;
        enum store_status st =
                show ? keyguard_describe(s, id, &info) : keyguard_revoke(s, id);
        if (st == STORE_NOT_FOUND) {
                fprintf(stderr, "frapi: no API key has the id %s\n", id);
                rc = CLI_BAD_INPUT;
                goto out;
        }
        if (st != STORE_OK && st != STORE_CONFLICT)
                goto out;
        if (!show && st == STORE_OK)
                admin_audit(s, "api_key.revoke", id);
        rc = print_json(show ? info
                             : json_pack("{s:s, s:b, s:b}", "id", id, "revoked",
                                         1, "revoked_before",
                                         st == STORE_CONFLICT));
out:
        store_close(s);
        return rc;
usage:
        keys_usage(stderr);
        return CLI_USAGE;
}

/* Adds one --allow entry to list after checking it parses. */
static int add_allow(json_t *list, const char *entry)
{
        struct ipallow_range r;
        char err[256];
        if (ipallow_parse_range(entry, &r, err, sizeof err) != 0) {
                fprintf(stderr, "frapi: --allow %s: %s\n", entry, err);
                return -1;
        }
        return json_array_append_new(list, json_string(entry));
}

int cli_keys(int argc, char **argv)
{
        const char *coll = NULL, *name = NULL, *dir_flag = NULL;
        json_t *allow = json_array();
        struct store_collection c = {0};
        struct store_apikey rec = {0};
        struct store *s = NULL;
        char *allow_text = NULL;
        char key[APIKEY_LEN + 1] = "";
        char dir[CONFIG_STR];
        uint8_t pepper[APIKEY_PEPPER_LEN];
        char err[512];
        long rpm = 0;
        int rc = CLI_USAGE;

        /* Arguments: the verb, then options in any order. */
        if (argc >= 1 &&
            (strcmp(argv[0], "revoke") == 0 || strcmp(argv[0], "show") == 0)) {
                json_decref(allow);
                return keys_revoke_or_show(argc - 1, argv + 1,
                                           strcmp(argv[0], "show") == 0);
        }
        if (!allow || argc < 1 || strcmp(argv[0], "create") != 0)
                goto usage;
        for (int i = 1; i < argc; i++) {
                bool missing = false;
                const char *v;
                if ((v = flag_value(argc, argv, &i, "--collection",
                                    &missing))) {
                        coll = v;
                } else if ((v = flag_value(argc, argv, &i, "--name",
                                           &missing))) {
                        name = v;
                } else if ((v = flag_value(argc, argv, &i, "--data-dir",
                                           &missing))) {
                        dir_flag = v;
                } else if ((v = flag_value(argc, argv, &i, "--rpm",
                                           &missing))) {
                        char *end;
                        errno = 0;
                        rpm = strtol(v, &end, 10);
                        if (*end || errno || rpm < 1 || rpm > 1000000) {
                                fprintf(stderr, "frapi: --rpm must be a whole "
                                                "number from 1 to 1000000\n");
                                goto usage;
                        }
                } else if ((v = flag_value(argc, argv, &i, "--allow",
                                           &missing))) {
                        if (add_allow(allow, v) != 0)
                                goto usage;
                } else {
                        goto usage;
                }
        }
        if (!coll) {
                fprintf(stderr, "frapi: --collection ID is required\n");
                goto usage;
        }

        /* The collection must exist; the key is useless otherwise. */
        rc = CLI_INTERNAL;
        if (data_dir(dir_flag, dir, sizeof dir) != 0 || !(s = open_store(dir)))
                goto out;
        if (apikey_pepper_load(dir, pepper, err, sizeof err) != 0) {
                fprintf(stderr, "frapi: %s\n", err);
                goto out;
        }
        enum store_status st = store_collection_get(s, coll, &c);
        if (st == STORE_NOT_FOUND) {
                fprintf(stderr, "frapi: no collection has the id %s\n", coll);
                rc = CLI_BAD_INPUT;
                goto out;
        }
        if (st != STORE_OK)
                goto out;

        /* Make the key; this output is the only place it ever appears. */
        allow_text = json_dumps(allow, JSON_COMPACT);
        if (!allow_text || apikey_create(s, pepper, coll, name, (int)rpm,
                                         allow_text, &rec, key) != STORE_OK)
                goto out;
        log_info("admin", "Created API key %s for collection %s.", rec.id,
                 coll);
        admin_audit(s, "api_key.create", rec.id);
        /* Without --rpm the key gets the default limit; say which. */
        rc = print_json(json_pack(
                "{s:s, s:s, s:s, s:s?, s:i, s:O, s:I}", "id", rec.id, "key",
                key, "collection_id", coll, "name", name, "rpm",
                (int)(rpm ? rpm : KEYGUARD_DEFAULT_RPM), "allowed_ips", allow,
                "created_ms", (json_int_t)rec.created_ms));
out:
        sodium_memzero(key, sizeof key);
        sodium_memzero(pepper, sizeof pepper);
        free(allow_text);
        json_decref(allow);
        store_apikey_clear(&rec);
        store_collection_clear(&c);
        store_close(s);
        return rc;
usage:
        json_decref(allow);
        keys_usage(stderr);
        return CLI_USAGE;
}
