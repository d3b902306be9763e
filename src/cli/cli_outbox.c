/*
 * cli_outbox.c - `frapi outbox`: prints the mail kept in the outbox
 * because no SMTP server is configured (verification and password reset
 * links), oldest first, so that an administrator of a fresh install can
 * pass the links on by hand.
 */
#include "cli/cli.h"
#include "config/config.h"
#include "mail/mail.h"
#include "store/store_sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_outbox(int argc, char **argv)
{
        struct config cfg;
        struct store *s = NULL;
        char err[512];
        int rc = CLI_INTERNAL, limit = 100;

        /* --limit N is ours; every other flag is the service's. */
        for (int i = 0; i < argc; i++) {
                if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
                        char *end;
                        long n = strtol(argv[i + 1], &end, 10);
                        if (*end || n < 1 || n > 100000) {
                                fprintf(stderr, "frapi outbox: --limit must "
                                                "be 1 to 100000\n");
                                return CLI_USAGE;
                        }
                        limit = (int)n;
                        memmove(argv + i, argv + i + 2,
                                (size_t)(argc - i - 2) * sizeof *argv);
                        argc -= 2;
                        i--;
                }
        }
        int loaded = config_load(&cfg, argc, argv, err, sizeof err);
        if (loaded == 1)
                return CLI_OK;
        if (loaded != 0) {
                fprintf(stderr, "frapi outbox: %s\n", err);
                return CLI_USAGE;
        }

        /* The store of the data directory, with the mail table. */
        if (store_sqlite_open(cfg.data_dir, &s, err, sizeof err) != STORE_OK) {
                fprintf(stderr, "frapi outbox: %s\n", err);
                return CLI_INTERNAL;
        }
        if (mail_migrate(s) == 0 && mail_outbox_print(s, stdout, limit) >= 0)
                rc = CLI_OK;
        store_close(s);
        return rc;
}
