/*
 * cli.h - the subcommands of the frapi binary.  Each takes the arguments
 * after its name and returns the process exit code.
 */
#ifndef FRAPI_CLI_H
#define FRAPI_CLI_H

/* Exit codes shared by every subcommand. */
enum cli_exit {
        CLI_OK = 0,
        CLI_INTERNAL = 1,  /* our failure: models missing, store broken */
        CLI_USAGE = 2,     /* wrong arguments */
        CLI_BAD_INPUT = 3, /* the user's input: unreadable photo, no face */
};

int cli_detect(int argc, char **argv);
int cli_compare(int argc, char **argv);
int cli_liveness(int argc, char **argv);

/* The face API: cli_serve.c (serve, routes), cli_admin.c (collections,
 * keys). */
int cli_serve(int argc, char **argv);
int cli_routes(int argc, char **argv);
int cli_collections(int argc, char **argv);
int cli_keys(int argc, char **argv);

/* The mail outbox of a server without SMTP: cli_outbox.c. */
int cli_outbox(int argc, char **argv);

#endif
