/*
 * cli_serve.c - `frapi serve`: the HTTP API, and `frapi routes`: the
 * routes it answers, one "METHOD PATTERN" a line.
 *
 * serve reads its settings (config module), opens the store in the data
 * directory, loads the models and the index, and serves until SIGTERM or
 * SIGINT; then it stops accepting, lets the requests in flight finish and
 * closes the store.
 */
#include "api/api.h"
#include "api/auth_handlers.h"
#include "api/keyguard.h"
#include "auth/apikey.h"
#include "auth/auth.h"
#include "auth/ratelimit.h"
#include "cli/cli.h"
#include "config/config.h"
#include "face/face.h"
#include "http/http.h"
#include "store/store_sqlite.h"
#include "util/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* What the service holds while it runs. */
struct service {
        struct config cfg;
        struct store *store;
        struct face_engine *engine;
        struct api api;
        bool api_ready;
        struct keyguard *guard;    /* allowlists, rate limits, last use */
        struct auth_service *auth; /* accounts, dashboard sign-in */
        struct http_server *srv;
        atomic_bool was_ready; /* what /readyz answered last */
};

/*
 * /readyz: the models are loaded and the store answers a query right now
 * (store_ping), so a load balancer stops sending requests to a server
 * whose database went away.  Called on every probe, from any server
 * thread; logs only the changes between ready and not ready.
 */
static bool service_ready(void *userdata, char *why, size_t whylen)
{
        struct service *svc = userdata;
        bool ready = true;

        if (!svc->engine || !svc->api_ready) {
                snprintf(why, whylen, "the models are not loaded");
                ready = false;
        } else if (!svc->store) {
                snprintf(why, whylen, "the store is not open");
                ready = false;
        } else if (store_ping(svc->store, why, whylen) != STORE_OK) {
                ready = false;
        }

        if (atomic_exchange(&svc->was_ready, ready) != ready) {
                if (ready)
                        log_info("serve", "The service is ready again.");
                else
                        log_error("serve", "The service is not ready: %s.",
                                  why);
        }
        return ready;
}

/* Opens the store, loads the engine and the index; 0 or -1 (logged). */
static int service_open(struct service *svc)
{
        struct face_engine_config ecfg;
        uint8_t pepper[APIKEY_PEPPER_LEN];
        char err[512];
        int rc = -1;

        if (mkdir(svc->cfg.data_dir, 0700) != 0 && errno != EEXIST) {
                log_error("serve", "Cannot create the data directory %s: %s.",
                          svc->cfg.data_dir, strerror(errno));
                return -1;
        }
        if (store_sqlite_open(svc->cfg.data_dir, &svc->store, err,
                              sizeof err) != STORE_OK ||
            apikey_pepper_load(svc->cfg.data_dir, pepper, err, sizeof err) !=
                    0) {
                log_error("serve", "The store cannot open: %s.", err);
                goto out;
        }

        /* The engine with the configured models, threads and limits. */
        face_engine_config_default(&ecfg);
        ecfg.model_dir = svc->cfg.model_dir;
        ecfg.threads = svc->cfg.threads;
        ecfg.min_face = svc->cfg.min_face;
        ecfg.limits.max_bytes = svc->cfg.max_image_bytes;
        ecfg.limits.max_pixels = svc->cfg.max_pixels;
        if (face_engine_new(&ecfg, &svc->engine, err, sizeof err) != FACE_OK) {
                log_error("serve", "The models cannot load: %s.", err);
                goto out;
        }
        if (api_init(&svc->api, svc->store, svc->engine, pepper, err,
                     sizeof err) != 0) {
                log_error("serve", "The API cannot start: %s.", err);
                goto out;
        }
        svc->api_ready = true;

        /* API keys in force: allowlists, rate limits, last use.  One node
         * counts requests in its own memory. */
        svc->api.max_batch_body = svc->cfg.max_batch_body_bytes;
        if (keyguard_new_with(svc->store, ratelimit_memory_new(),
                              svc->cfg.trusted_proxies, KEYGUARD_FLUSH_MS,
                              &svc->guard, err, sizeof err) != 0 ||
            keyauth_add_check(svc->api.keyauth, keyguard_check, svc->guard)) {
                log_error("serve", "API keys cannot be enforced: %s.", err);
                goto out;
        }

        /* Accounts and dashboard sign-in: tables, token secret, mail. */
        struct auth_settings aset;
        if (auth_settings_load(&aset, &svc->cfg, err, sizeof err) != 0) {
                log_error("serve", "The account settings are unusable: %s.",
                          err);
                goto out;
        }
        svc->auth = auth_service_start(svc->store, svc->cfg.data_dir, &aset);
        sodium_memzero(&aset, sizeof aset);
        if (!svc->auth)
                goto out;
        rc = 0;
out:
        sodium_memzero(pepper, sizeof pepper);
        return rc;
}

static void service_close(struct service *svc)
{
        http_server_free(svc->srv);
        keyguard_free(svc->guard);
        auth_service_stop(svc->auth);
        if (svc->api_ready)
                api_fini(&svc->api);
        face_engine_free(svc->engine);
        store_close(svc->store);
}

int cli_serve(int argc, char **argv)
{
        struct service svc = {0};
        struct http_config hcfg;
        char err[512];
        int rc = CLI_INTERNAL;

        /* Settings: defaults < file < environment < flags. */
        int got = config_load(&svc.cfg, argc, argv, err, sizeof err);
        if (got == 1)
                return CLI_OK;
        if (got != 0) {
                fprintf(stderr, "frapi serve: %s\n", err);
                return CLI_USAGE;
        }
        if (svc.cfg.log_level[0]) {
                static const char *const levels[] = {"debug", "info", "warn",
                                                     "error"};
                for (int i = 0; i < 4; i++)
                        if (strcmp(svc.cfg.log_level, levels[i]) == 0)
                                log_set_level(i);
        }
        /* Before any thread starts (the mail sender, the server's pool), so
         * that every thread inherits the mask and a Ctrl-C during start-up
         * is taken by http_signals_wait() like any other. */
        http_signals_block();
        if (sodium_init() < 0) {
                log_error("serve", "libsodium failed to initialise.");
                return CLI_INTERNAL;
        }
        if (service_open(&svc) != 0)
                goto out;

        /* The server with every route, then the signals, then the socket. */
        config_to_http(&svc.cfg, &hcfg);
        svc.srv = http_server_new(&hcfg, err, sizeof err);
        if (!svc.srv) {
                log_error("serve", "The server settings are unusable: %s.",
                          err);
                rc = CLI_USAGE;
                goto out;
        }
        api_register(&svc.api, svc.srv);
        auth_handlers_register(svc.srv, svc.auth);
        atomic_init(&svc.was_ready, true);
        http_server_set_ready(svc.srv, service_ready, &svc);
        if (http_server_start(svc.srv, err, sizeof err) != 0) {
                log_error("serve", "The server cannot start: %s.", err);
                goto out;
        }
        log_info("serve", "Serving on port %u with data in %s.",
                 (unsigned)http_server_port(svc.srv), svc.cfg.data_dir);

        /* Until told to stop; then finish what is in flight. */
        int sig = http_signals_wait();
        log_info("serve", "Signal %d received; stopping.", sig);
        http_server_stop(svc.srv);
        rc = CLI_OK;
out:
        service_close(&svc);
        return rc;
}

int cli_routes(int argc, char **argv)
{
        struct http_config hcfg;
        struct api api = {0};
        char err[256];
        const char *method, *pattern;

        /* The same registration as serve, on a server that never starts. */
        (void)argv;
        if (argc != 0) {
                fprintf(stderr, "usage: frapi routes\n");
                return CLI_USAGE;
        }
        http_config_default(&hcfg);
        struct http_server *srv = http_server_new(&hcfg, err, sizeof err);
        if (!srv) {
                fprintf(stderr, "frapi routes: %s\n", err);
                return CLI_INTERNAL;
        }
        api_register(&api, srv);
        auth_handlers_register(srv, NULL);
        for (size_t i = 0; i < http_server_route_count(srv); i++) {
                http_server_route_info(srv, i, &method, &pattern);
                printf("%s %s\n", method, pattern);
        }
        http_server_free(srv);
        return CLI_OK;
}
