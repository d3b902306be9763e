/*
 * bench/auth.c - what one sign-in costs in CPU: an argon2id hash and
 * verification, issuing and checking an access token, checking a TOTP
 * code, and, on a real SQLite store in a throwaway directory, the session
 * check every Bearer request makes and one refresh-token rotation.
 *
 *   build/bench/auth [SECONDS]
 *
 * Runs each for SECONDS (default 1) and prints the mean time per call.
 */
#include "auth/account.h"
#include "auth/jwtauth.h"
#include "auth/password.h"
#include "auth/totp.h"
#include "store/store_sqlite.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Everything the measured operations need. */
struct ctx {
        struct jwtauth_key key;
        char hash[PASSWORD_HASH_SIZE];
        char *token;
        struct store *store;
        char uid[STORE_ID_MAX], sid[STORE_ID_MAX];
        char refresh[TOKEN_SIZE];
        long long step;
};

static int op_hash(struct ctx *c)
{
        return password_hash("correct horse battery", 21, c->hash);
}

static int op_verify(struct ctx *c)
{
        return password_verify(c->hash, "correct horse battery", 21) ? 0 : -1;
}

static int op_jwt_issue(struct ctx *c)
{
        struct jwtauth_claims cl = {
                .sub = "usr_1", .org = "org_1", .sid = "ses_1", .jti = "jti_1"};
        cl.iat = time(NULL);
        cl.exp = cl.iat + 3600;
        char *t = jwtauth_issue(&c->key, &cl);
        free(t);
        return t ? 0 : -1;
}

static int op_jwt_verify(struct ctx *c)
{
        struct jwtauth_claims out;
        return jwtauth_verify(&c->key, c->token, time(NULL), &out) == JWTAUTH_OK
                       ? 0
                       : -1;
}

static int op_totp(struct ctx *c)
{
        (void)c;
        long long step;
        char code[7];
        time_t now = time(NULL);
        totp_code("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", totp_step(now), code);
        return totp_check("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", code, now, -1,
                          &step) == TOTP_ACCEPTED
                       ? 0
                       : -1;
}

static int op_session(struct ctx *c)
{
        return account_session_check(c->store, c->sid, c->uid) == ACCOUNT_OK
                       ? 0
                       : -1;
}

static int op_rotate(struct ctx *c)
{
        char sid[STORE_ID_MAX], uid[STORE_ID_MAX], next[TOKEN_SIZE];
        if (account_refresh_rotate(c->store, c->refresh, 3600, "127.0.0.1", sid,
                                   uid, next) != ACCOUNT_OK)
                return -1;
        memcpy(c->refresh, next, sizeof next);
        return 0;
}

/* Runs op for seconds; prints the mean time per call. */
static int measure(const char *name, int (*op)(struct ctx *), struct ctx *c,
                   double seconds)
{
        long n = 0;
        double start = mono(), now = start;
        while (now - start < seconds) {
                if (op(c) != 0) {
                        fprintf(stderr, "bench/auth: %s failed\n", name);
                        return -1;
                }
                n++;
                now = mono();
        }
        double per = (now - start) / (double)n;
        if (per >= 1e-3)
                printf("%-28s %10.2f ms  (%ld calls)\n", name, per * 1e3, n);
        else
                printf("%-28s %10.2f us  (%ld calls)\n", name, per * 1e6, n);
        return 0;
}

int main(int argc, char **argv)
{
        struct ctx c = {0};
        struct account_user u;
        char dir[] = "/tmp/frapi-bench-auth-XXXXXX", err[256], cmd[64];
        double seconds = argc > 1 ? atof(argv[1]) : 1.0;
        int rc = 1;

        if (sodium_init() < 0 || totp_init() != 0 || seconds <= 0)
                return 2;
        randombytes_buf(c.key.secret, sizeof c.key.secret);

        /* A store with one user and one session. */
        if (!mkdtemp(dir) ||
            store_sqlite_open(dir, &c.store, err, sizeof err) != STORE_OK ||
            account_migrate(c.store) != 0 || op_hash(&c) != 0 ||
            account_create(c.store, "bench@example.com", "Bench", c.hash, &u) !=
                    ACCOUNT_OK ||
            account_session_open(c.store, u.id, "127.0.0.1", "bench", 3600,
                                 c.sid, c.refresh) != ACCOUNT_OK)
                goto out;
        memcpy(c.uid, u.id, sizeof c.uid);
        struct jwtauth_claims cl = {
                .sub = "usr_1", .org = "org_1", .sid = "ses_1", .jti = "jti_1"};
        cl.iat = time(NULL);
        cl.exp = cl.iat + 3600;
        c.token = jwtauth_issue(&c.key, &cl);

        if (!c.token || measure("argon2id hash", op_hash, &c, seconds) ||
            measure("argon2id verify", op_verify, &c, seconds) ||
            measure("access token issue", op_jwt_issue, &c, seconds) ||
            measure("access token verify", op_jwt_verify, &c, seconds) ||
            measure("TOTP check (3 steps)", op_totp, &c, seconds) ||
            measure("session check (SQLite)", op_session, &c, seconds) ||
            measure("refresh rotation (SQLite)", op_rotate, &c, seconds))
                goto out;
        rc = 0;
out:
        free(c.token);
        store_close(c.store);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                rc = 1;
        return rc;
}
