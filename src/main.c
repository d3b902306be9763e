/*
 * frapi - the FR-APIaaS face recognition service and its tools, one binary
 * with subcommands.
 */
#include "cli/cli.h"
#include "util/log.h"

#include <stdio.h>
#include <string.h>

struct command {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *help;
};

static const struct command commands[] = {
        {"detect", cli_detect,
         "detect [--min-face N] PHOTO: faces, landmarks, quality"},
        {"compare", cli_compare,
         "compare [--min-face N] PHOTO_A PHOTO_B: similarity, match"},
        {"liveness", cli_liveness,
         "liveness [--min-face N] PHOTO: live score per face"},
        {"serve", cli_serve, "serve [--listen ADDR] ...: run the HTTP API"},
        {"routes", cli_routes, "routes: the API's routes, one a line"},
        {"collections", cli_collections, "collections create NAME"},
        {"keys", cli_keys,
         "keys create --collection ID [--rpm N] [--allow "
         "CIDR]... | keys revoke|show ID"},
        {"outbox", cli_outbox, "outbox [--limit N]: mail kept without SMTP"},
};

static void usage(FILE *to)
{
        fprintf(to, "usage: frapi COMMAND [ARGS]\n\ncommands:\n");
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                fprintf(to, "  %s\n", commands[i].help);
}

int main(int argc, char **argv)
{
        log_set_level(-1);
        if (argc < 2) {
                usage(stderr);
                return CLI_USAGE;
        }
        if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
                usage(stdout);
                return CLI_OK;
        }

        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 2, argv + 2);

        fprintf(stderr, "frapi: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return CLI_USAGE;
}
