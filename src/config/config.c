#include "config/config.h"
#include "auth/ipallow.h"
#include "http/http.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum setting_type {
        T_STR,    /* text up to the field's size */
        T_LISTEN, /* HOST:PORT or [IPV6]:PORT */
        T_LEVEL,  /* debug, info, warn, error */
        T_CIDRS,  /* comma-separated addresses and CIDR ranges */
        T_INT,
        T_SIZE, /* bytes, with an optional K, M or G (powers of 1024) */
        T_U64,
        T_BOOL,
};

struct setting {
        const char *name; /* file spelling; env and flag derive from it */
        enum setting_type type;
        size_t offset;
        size_t size; /* of a text field */
        long long min;
        long long max;
        bool secret;
        const char *help;
};

#define STR(f, h)                                                              \
        {                                                                      \
#f, T_STR, offsetof(struct config, f),                         \
                        sizeof(((struct config *)0)->f), 0, 0, false, h        \
        }
#define NUM(f, t, lo, hi, h)                                                   \
        {                                                                      \
#f, t, offsetof(struct config, f), 0, lo, hi, false, h         \
        }

static const struct setting settings[] = {
        {"listen", T_LISTEN, offsetof(struct config, listen), CONFIG_STR, 0, 0,
         false, "address and port to serve on"},
        STR(data_dir, "folder of the database and kept photos"),
        STR(model_dir, "folder holding the fr_*.onnx models"),
        STR(access_log, "access log: a path, - for stdout, empty for none"),
        {"log_level", T_LEVEL, offsetof(struct config, log_level), 16, 0, 0,
         false, "lowest event log level: debug, info, warn, error"},
        NUM(threads, T_INT, 1, 256, "inference threads per model run"),
        NUM(min_face, T_INT, 20, 20000,
            "smallest face side in pixels the engine reports"),
        NUM(http_threads, T_INT, 1, 1024, "server threads"),
        NUM(max_body_bytes, T_SIZE, 1024, 1LL << 32, "request body limit"),
        NUM(max_batch_body_bytes, T_SIZE, 1024, 1LL << 34,
            "body limit of batch and import calls"),
        NUM(max_header_bytes, T_SIZE, 4096, 1 << 24,
            "memory per connection for the request line and headers"),
        NUM(max_image_bytes, T_SIZE, 1024, 1LL << 32, "one image"),
        NUM(max_pixels, T_U64, 10000, 1LL << 34, "one decoded image"),
        NUM(max_concurrent_recognitions, T_INT, 1, 4096, "engine runs at once"),
        NUM(queue_length, T_INT, 0, 1000000,
            "requests that may wait for an engine run"),
        NUM(queue_wait_ms, T_INT, 0, 3600000,
            "longest wait for an engine run before 503"),
        NUM(request_timeout_s, T_INT, 1, 86400,
            "seconds a connection may stay silent"),
        NUM(receive_timeout_s, T_INT, 1, 86400,
            "seconds from a request's headers to the end of its body"),
        NUM(max_connections, T_INT, 1, 1000000, "open connections at once"),
        NUM(shutdown_grace_s, T_INT, 0, 86400,
            "seconds a stop waits for requests in flight"),
        {"trusted_proxies", T_CIDRS, offsetof(struct config, trusted_proxies),
         CONFIG_STR, 0, 0, false,
         "proxies whose X-Forwarded-For counts (IPs, CIDRs)"},
        STR(public_url, "base URL of the service in email links"),
        STR(smtp_host, "mail server; empty writes mail to the outbox"),
        NUM(smtp_port, T_INT, 1, 65535, "mail server port"),
        NUM(smtp_starttls, T_BOOL, 0, 1, "use STARTTLS"),
        STR(smtp_user, "mail server user"),
        {"smtp_password", T_STR, offsetof(struct config, smtp_password),
         CONFIG_STR, 0, 0, true, "mail server password"},
        STR(smtp_from, "sender address of mail"),
        STR(smtp_ca_file, "PEM file of the CAs the mail server's "
                          "certificate may chain to; empty for the system's"),
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

char *config_model_dir_default(char *out, size_t n)
{
        struct stat st;
        char exe[PATH_MAX];
        ssize_t len;

        snprintf(out, n, ".deps/models");
        if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
                return out;
        len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len <= 0)
                return out;
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (!slash)
                return out;
        *slash = '\0';
        char beside[PATH_MAX + 32];
        snprintf(beside, sizeof beside, "%s/../.deps/models", exe);
        if (stat(beside, &st) == 0 && S_ISDIR(st.st_mode) && strlen(beside) < n)
                snprintf(out, n, "%s", beside);
        return out;
}

void config_default(struct config *cfg)
{
        memset(cfg, 0, sizeof *cfg);
        strcpy(cfg->listen, "127.0.0.1:8080");
        strcpy(cfg->data_dir, "./data");
        config_model_dir_default(cfg->model_dir, sizeof cfg->model_dir);
        strcpy(cfg->access_log, "-");
        strcpy(cfg->log_level, "info");
        cfg->threads = 1;
        cfg->min_face = 20;
        cfg->http_threads = 8;
        cfg->max_body_bytes = 16u << 20;
        cfg->max_batch_body_bytes = 128u << 20;
        cfg->max_header_bytes = 32u << 10;
        cfg->max_image_bytes = 10u << 20;
        cfg->max_pixels = 40000000;
        cfg->max_concurrent_recognitions = 2;
        cfg->queue_length = 16;
        cfg->queue_wait_ms = 10000;
        cfg->request_timeout_s = 30;
        cfg->receive_timeout_s = 300;
        cfg->max_connections = 1000;
        cfg->shutdown_grace_s = 30;
        strcpy(cfg->public_url, "http://127.0.0.1:8080");
        cfg->smtp_port = 587;
        cfg->smtp_starttls = true;
        strcpy(cfg->smtp_from, "frapi@localhost");
}

static const struct setting *setting_find(const char *name)
{
        for (size_t i = 0; i < NSETTINGS; i++)
                if (strcmp(settings[i].name, name) == 0)
                        return &settings[i];
        return NULL;
}

/* Parses a whole decimal number, with a K/M/G suffix when sized. */
static bool parse_number(const char *v, bool sized, long long *out)
{
        if (!isdigit((unsigned char)v[0]) &&
            !(v[0] == '-' && isdigit((unsigned char)v[1])))
                return false;
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno == ERANGE)
                return false;

        /* A size may end in K, M or G (1024-based), nothing else. */
        if (sized && *end) {
                int shift = 0;
                switch (toupper((unsigned char)*end)) {
                case 'K':
                        shift = 10;
                        break;
                case 'M':
                        shift = 20;
                        break;
                case 'G':
                        shift = 30;
                        break;
                default:
                        return false;
                }
                end++;
                if (toupper((unsigned char)*end) == 'B')
                        end++;
                if (n > (LLONG_MAX >> shift) || n < 0)
                        return false;
                n <<= shift;
        }
        if (*end)
                return false;
        *out = n;
        return true;
}

/* Checks a comma-separated list of addresses and CIDR ranges. */
static bool check_cidrs(const char *v, char *why, size_t whylen)
{
        char entry[64];
        while (*v) {
                size_t n = strcspn(v, ",");
                const char *s = v;
                size_t len = n;
                while (len && isspace((unsigned char)*s)) {
                        s++;
                        len--;
                }
                while (len && isspace((unsigned char)s[len - 1]))
                        len--;
                if (len == 0 || len >= sizeof entry) {
                        snprintf(why, whylen, "an entry is empty or too long");
                        return false;
                }
                memcpy(entry, s, len);
                entry[len] = '\0';
                struct ipallow_range r;
                if (ipallow_parse_range(entry, &r, why, whylen) != 0)
                        return false;
                v += n;
                if (*v == ',')
                        v++;
        }
        return true;
}

int config_set(struct config *cfg, const char *name, const char *value,
               const char *source, char *err, size_t errlen)
{
        const struct setting *s = setting_find(name);
        if (!s) {
                snprintf(err, errlen, "%s: there is no setting '%s'", source,
                         name);
                return -1;
        }
        char *field = (char *)cfg + s->offset;
        char why[200] = "";

        /* Text settings: the length, then what the type asks. */
        if (s->type <= T_CIDRS) {
                if (strlen(value) >= s->size) {
                        snprintf(why, sizeof why, "longer than %zu bytes",
                                 s->size - 1);
                        goto refuse;
                }
                if (s->type == T_LISTEN) {
                        struct sockaddr_storage ss;
                        socklen_t len;
                        if (http_parse_listen(value, &ss, &len, why,
                                              sizeof why) != 0)
                                goto refuse;
                }
                if (s->type == T_LEVEL && strcmp(value, "debug") != 0 &&
                    strcmp(value, "info") != 0 && strcmp(value, "warn") != 0 &&
                    strcmp(value, "error") != 0) {
                        snprintf(why, sizeof why,
                                 "'%.60s' is not debug, info, warn or error",
                                 value);
                        goto refuse;
                }
                if (s->type == T_CIDRS && !check_cidrs(value, why, sizeof why))
                        goto refuse;
                strcpy(field, value);
                return 0;
        }

        /* Booleans in the usual spellings. */
        if (s->type == T_BOOL) {
                bool *b = (bool *)field;
                if (!strcmp(value, "true") || !strcmp(value, "1") ||
                    !strcmp(value, "yes") || !strcmp(value, "on"))
                        *b = true;
                else if (!strcmp(value, "false") || !strcmp(value, "0") ||
                         !strcmp(value, "no") || !strcmp(value, "off"))
                        *b = false;
                else {
                        snprintf(why, sizeof why,
                                 "'%.60s' is not true or false", value);
                        goto refuse;
                }
                return 0;
        }

        /* Numbers in their range. */
        long long n;
        if (!parse_number(value, s->type == T_SIZE, &n)) {
                snprintf(why, sizeof why, "'%.60s' is not %s", value,
                         s->type == T_SIZE ? "a size in bytes (e.g. 16M)"
                                           : "a whole number");
                goto refuse;
        }
        if (n < s->min || n > s->max) {
                snprintf(why, sizeof why, "%lld is outside %lld..%lld", n,
                         s->min, s->max);
                goto refuse;
        }
        if (s->type == T_INT)
                *(int *)field = (int)n;
        else if (s->type == T_SIZE)
                *(size_t *)field = (size_t)n;
        else
                *(uint64_t *)field = (uint64_t)n;
        return 0;

refuse:
        snprintf(err, errlen, "%s (%s): %s", name, source, why);
        return -1;
}

/* Trims white space at both ends of s, in place. */
static char *trim(char *s)
{
        while (isspace((unsigned char)*s))
                s++;
        size_t n = strlen(s);
        while (n && isspace((unsigned char)s[n - 1]))
                s[--n] = '\0';
        return s;
}

int config_apply_file(struct config *cfg, const char *path, char *err,
                      size_t errlen)
{
        FILE *f = fopen(path, "re");
        if (!f) {
                snprintf(err, errlen, "config file %s: %s", path,
                         strerror(errno));
                return -1;
        }
        int rc = 0;
        char line[2048];
        char source[600];

        /* `key = value` lines; blank lines and lines starting with # are
         * skipped; a value may be wrapped in double quotes. */
        for (int lineno = 1; fgets(line, sizeof line, f); lineno++) {
                snprintf(source, sizeof source, "config file %.500s line %d",
                         path, lineno);
                if (!strchr(line, '\n') && !feof(f)) {
                        snprintf(err, errlen, "%s: the line is too long",
                                 source);
                        rc = -1;
                        goto close;
                }
                char *s = trim(line);
                if (*s == '\0' || *s == '#')
                        continue;
                char *eq = strchr(s, '=');
                if (!eq) {
                        snprintf(err, errlen, "%s: expected `name = value`",
                                 source);
                        rc = -1;
                        goto close;
                }
                *eq = '\0';
                char *key = trim(s);
                char *value = trim(eq + 1);
                size_t vlen = strlen(value);
                if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
                        value[vlen - 1] = '\0';
                        value++;
                }
                if (config_set(cfg, key, value, source, err, errlen) != 0) {
                        rc = -1;
                        goto close;
                }
        }
        if (ferror(f)) {
                snprintf(err, errlen, "config file %s: read error", path);
                rc = -1;
        }

close:
        fclose(f);
        return rc;
}

/* Writes the environment name of a setting: FRAPI_ + upper case. */
static void env_name(const struct setting *s, char *out, size_t len)
{
        size_t n = (size_t)snprintf(out, len, "FRAPI_%s", s->name);
        for (size_t i = 6; i < n && i < len; i++)
                out[i] = (char)toupper((unsigned char)out[i]);
}

/* Writes the flag of a setting: -- + name with dashes. */
static void flag_name(const struct setting *s, char *out, size_t len)
{
        size_t n = (size_t)snprintf(out, len, "--%s", s->name);
        for (size_t i = 2; i < n && i < len; i++)
                if (out[i] == '_')
                        out[i] = '-';
}

int config_apply_env(struct config *cfg, char *err, size_t errlen)
{
        for (size_t i = 0; i < NSETTINGS; i++) {
                char env[64];
                char source[96];
                env_name(&settings[i], env, sizeof env);
                const char *v = getenv(env);
                if (!v)
                        continue;
                snprintf(source, sizeof source, "environment %s", env);
                if (config_set(cfg, settings[i].name, v, source, err, errlen))
                        return -1;
        }
        return 0;
}

/* Finds the setting of a flag ("--data-dir"), or NULL. */
static const struct setting *flag_find(const char *flag, size_t len)
{
        for (size_t i = 0; i < NSETTINGS; i++) {
                char name[64];
                flag_name(&settings[i], name, sizeof name);
                if (strlen(name) == len && strncmp(name, flag, len) == 0)
                        return &settings[i];
        }
        return NULL;
}

int config_apply_flags(struct config *cfg, int argc, char **argv, char *err,
                       size_t errlen)
{
        for (int i = 0; i < argc; i++) {
                const char *arg = argv[i];

                /* --config was read before the file; skip it here. */
                if (strcmp(arg, "--config") == 0) {
                        i++;
                        continue;
                }
                if (strncmp(arg, "--config=", 9) == 0)
                        continue;
                if (strncmp(arg, "--", 2) != 0) {
                        snprintf(err, errlen, "unexpected argument '%.100s'",
                                 arg);
                        return -1;
                }

                /* --name=value or --name value. */
                const char *eq = strchr(arg, '=');
                size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
                const struct setting *s = flag_find(arg, len);
                if (!s) {
                        snprintf(err, errlen, "unknown flag '%.*s'", (int)len,
                                 arg);
                        return -1;
                }
                const char *value = eq ? eq + 1 : NULL;
                if (!value) {
                        if (i + 1 >= argc) {
                                snprintf(err, errlen, "flag %s needs a value",
                                         arg);
                                return -1;
                        }
                        value = argv[++i];
                }
                char source[96];
                snprintf(source, sizeof source, "flag %.*s",
                         (int)(len < 60 ? len : 60), arg);
                if (config_set(cfg, s->name, value, source, err, errlen))
                        return -1;
        }
        return 0;
}

int config_check(const struct config *cfg, char *err, size_t errlen)
{
        if (cfg->data_dir[0] == '\0') {
                snprintf(err, errlen, "data_dir must not be empty");
                return -1;
        }
        if (cfg->model_dir[0] == '\0') {
                snprintf(err, errlen, "model_dir must not be empty");
                return -1;
        }

        /* A body must be able to carry one image, and a batch one body. */
        if (cfg->max_body_bytes < cfg->max_image_bytes) {
                snprintf(err, errlen,
                         "max_body_bytes (%zu) must be at least "
                         "max_image_bytes (%zu)",
                         cfg->max_body_bytes, cfg->max_image_bytes);
                return -1;
        }
        if (cfg->max_batch_body_bytes < cfg->max_body_bytes) {
                snprintf(err, errlen,
                         "max_batch_body_bytes (%zu) must be at least "
                         "max_body_bytes (%zu)",
                         cfg->max_batch_body_bytes, cfg->max_body_bytes);
                return -1;
        }
        return 0;
}

int config_load(struct config *cfg, int argc, char **argv, char *err,
                size_t errlen)
{
        config_default(cfg);

        /* --help wins over everything else. */
        const char *file = getenv("FRAPI_CONFIG");
        for (int i = 0; i < argc; i++) {
                if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                        config_usage(stdout);
                        return 1;
                }
                if (strcmp(argv[i], "--config") == 0) {
                        if (i + 1 >= argc) {
                                snprintf(err, errlen,
                                         "flag --config needs a value");
                                return -1;
                        }
                        file = argv[i + 1];
                } else if (strncmp(argv[i], "--config=", 9) == 0) {
                        file = argv[i] + 9;
                }
        }

        /* File, then environment, then flags: the later wins. */
        if (file && *file && config_apply_file(cfg, file, err, errlen) != 0)
                return -1;
        if (config_apply_env(cfg, err, errlen) != 0)
                return -1;
        if (config_apply_flags(cfg, argc, argv, err, errlen) != 0)
                return -1;
        return config_check(cfg, err, errlen);
}

/* Writes the value of one setting as text. */
static void value_text(const struct config *cfg, const struct setting *s,
                       char *out, size_t len)
{
        const char *field = (const char *)cfg + s->offset;
        switch (s->type) {
        case T_STR:
        case T_LISTEN:
        case T_LEVEL:
        case T_CIDRS:
                snprintf(out, len, "%s", s->secret && *field ? "***" : field);
                break;
        case T_INT:
                snprintf(out, len, "%d", *(const int *)field);
                break;
        case T_SIZE:
                snprintf(out, len, "%zu", *(const size_t *)field);
                break;
        case T_U64:
                snprintf(out, len, "%llu",
                         (unsigned long long)*(const uint64_t *)field);
                break;
        case T_BOOL:
                snprintf(out, len, "%s",
                         *(const bool *)field ? "true" : "false");
                break;
        }
}

void config_print(const struct config *cfg, FILE *to)
{
        char v[CONFIG_STR + 8];
        for (size_t i = 0; i < NSETTINGS; i++) {
                value_text(cfg, &settings[i], v, sizeof v);
                fprintf(to, "%s = %s\n", settings[i].name, v);
        }
}

void config_usage(FILE *to)
{
        struct config def;
        config_default(&def);
        fprintf(to, "Settings (flag, environment; file key = flag without "
                    "--, with _):\n  --config FILE, FRAPI_CONFIG\n");
        for (size_t i = 0; i < NSETTINGS; i++) {
                char flag[64], env[64], v[CONFIG_STR + 8];
                flag_name(&settings[i], flag, sizeof flag);
                env_name(&settings[i], env, sizeof env);
                value_text(&def, &settings[i], v, sizeof v);
                fprintf(to, "  %s, %s: %s (default \"%s\")\n", flag, env,
                        settings[i].help, v);
        }
}

void config_to_http(const struct config *cfg, struct http_config *http)
{
        http_config_default(http);
        http->listen = cfg->listen;
        http->threads = cfg->http_threads;
        http->max_body_bytes = cfg->max_body_bytes;
        http->max_header_bytes = cfg->max_header_bytes;
        http->request_timeout_s = cfg->request_timeout_s;
        http->receive_timeout_s = cfg->receive_timeout_s;
        http->max_connections = cfg->max_connections;
        http->shutdown_grace_s = cfg->shutdown_grace_s;
        http->gate_slots = cfg->max_concurrent_recognitions;
        http->gate_queue = cfg->queue_length;
        http->gate_wait_ms = cfg->queue_wait_ms;
        http->access_log = cfg->access_log;
}
