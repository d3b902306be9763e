/*
 * config.h - every setting of the service, with its default, read from
 * (in increasing priority) a config file, the environment and command
 * line flags.
 *
 * One setting has one name in three spellings: "data_dir" in the file
 * (`data_dir = /var/lib/frapi`), FRAPI_DATA_DIR in the environment and
 * --data-dir on the command line (`--data-dir DIR` or `--data-dir=DIR`).
 * The file is named by --config FILE or FRAPI_CONFIG.  A bad value is
 * refused with a message naming the setting and where it came from.
 * docs/operations.md lists them all.
 */
#ifndef FRAPI_CONFIG_H
#define FRAPI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct http_config;

#define CONFIG_STR 512

struct config {
        /* Where things are. */
        char listen[CONFIG_STR];     /* 127.0.0.1:8080; [::1]:8080 */
        char data_dir[CONFIG_STR];   /* ./data */
        char model_dir[CONFIG_STR];  /* .deps/models */
        char access_log[CONFIG_STR]; /* "-" stdout, "" none, or a path */
        char log_level[16];          /* debug, info, warn, error */

        /* Threads and limits. */
        int threads;                     /* inference threads per model run */
        int min_face;                    /* smallest face side, pixels */
        int http_threads;                /* server pool threads */
        size_t max_body_bytes;           /* request body limit */
        size_t max_batch_body_bytes;     /* body limit of batch and import */
        size_t max_header_bytes;         /* header memory per connection */
        size_t max_image_bytes;          /* one image */
        uint64_t max_pixels;             /* one decoded image */
        int max_concurrent_recognitions; /* engine runs at once */
        int queue_length;                /* requests waiting for a run */
        int queue_wait_ms;               /* longest wait before 503 */
        int request_timeout_s;           /* idle connection timeout */
        int receive_timeout_s;           /* headers to end of body */
        int max_connections;             /* open connections */
        int shutdown_grace_s;            /* wait for requests at stop */

        /* Network trust. */
        char trusted_proxies[CONFIG_STR]; /* comma-separated IPs/CIDRs */

        /* Dashboard and accounts. */
        char public_url[CONFIG_STR]; /* base URL put in email links */
        char smtp_host[CONFIG_STR];  /* "" = write mail to the outbox */
        int smtp_port;
        bool smtp_starttls;
        char smtp_user[CONFIG_STR];
        char smtp_password[CONFIG_STR]; /* secret: never printed */
        char smtp_from[CONFIG_STR];
        char smtp_ca_file[CONFIG_STR]; /* "" = the system's CA bundle */
};

/* Fills *cfg with every default. */
void config_default(struct config *cfg);

/* The default model folder: .deps/models under the working directory
 * when it is there, else .deps/models of the checkout the running
 * binary was built in (the binary sits in build/ or build-san/), so that
 * build/frapi works from any directory; else ".deps/models".  Writes at
 * most n bytes into out and returns out. */
char *config_model_dir_default(char *out, size_t n);

/*
 * Builds the configuration of a command: defaults, then the file named by
 * --config in argv or FRAPI_CONFIG, then the environment, then the flags
 * in argv (the arguments after the command name).  Returns 0, 1 when
 * --help was asked (usage printed on stdout), or -1 with a message naming
 * the setting in err.
 */
int config_load(struct config *cfg, int argc, char **argv, char *err,
                size_t errlen);

/* The three sources one at a time (each returns 0 or -1 with err). */
int config_apply_file(struct config *cfg, const char *path, char *err,
                      size_t errlen);
int config_apply_env(struct config *cfg, char *err, size_t errlen);
int config_apply_flags(struct config *cfg, int argc, char **argv, char *err,
                       size_t errlen);

/* Sets one setting by its file name ("max_body_bytes") from text; source
 * names where the text came from, for the message.  Returns 0 or -1. */
int config_set(struct config *cfg, const char *name, const char *value,
               const char *source, char *err, size_t errlen);

/* Checks the settings against each other.  Returns 0 or -1 with err. */
int config_check(const struct config *cfg, char *err, size_t errlen);

/* Prints the settings, one `name = value` a line, secrets masked. */
void config_print(const struct config *cfg, FILE *to);

/* Prints the flags with their environment names and defaults. */
void config_usage(FILE *to);

/* Fills the server settings from cfg (strings borrowed from cfg). */
void config_to_http(const struct config *cfg, struct http_config *http);

#endif
